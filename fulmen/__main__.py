"""`python -m fulmen ...`: the same as the `fulmen` command (see fulmen.commands)."""

import sys

from fulmen.commands import main

if __name__ == "__main__":
    sys.exit(main())
