"""`python -m fulmen ...`: the same as the `fulmen` command (see fulmen.cli)."""

import sys

from fulmen.cli import main

if __name__ == "__main__":
    sys.exit(main())
