"""florql's storage engine (import name `florql_storage`): bytes, LSNs, records and pages.

See FORMAT.md beside this file for the on-disk layout. This package never imports florql,
torch or DuckDB.
"""
