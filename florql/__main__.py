import sys

from florql.cli import main

sys.exit(main())
