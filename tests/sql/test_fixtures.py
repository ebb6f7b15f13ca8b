"""SQL fixture files (tests/sql/fixtures/*.sql) run against the standard store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from florql.errors import FlorqlError
from florql.sql.connection import connect

FIXTURES = Path(__file__).parent / "fixtures"


def _cases() -> list:
    out = []
    for path in sorted(FIXTURES.glob("*.sql")):
        for block in re.split(r"^-- case: ", path.read_text(), flags=re.M)[1:]:
            title, _, body = block.partition("\n")
            out.append(pytest.param(body, id=f"{path.stem}: {title.strip()}"))
    return out


def canonical(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


@pytest.mark.parametrize("body", _cases())
def test_fixture_case_answers_as_written(standard_store: str, body: str) -> None:
    marker = re.search(r"^(-- expect:|-- error: )", body, flags=re.M)
    assert marker, "a case needs -- expect: or -- error:"
    sql, after = body[: marker.start()], body[marker.end() :]
    con = connect(standard_store, replay=False)
    try:
        if marker.group(1) == "-- error: ":
            cls_name, _, fragment = after.strip().partition(": ")
            with pytest.raises(FlorqlError) as info:
                con.sql(sql).fetchall()
            assert type(info.value).__name__ == cls_name
            assert fragment in str(info.value)
            return
        expected = [line for line in after.strip().splitlines() if line.strip()]
        rows = con.sql(sql).fetchall()
        assert ["|".join(canonical(v) for v in row) for row in rows] == expected
    finally:
        con.close()
