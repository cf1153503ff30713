"""``python -m greenshift``: the command line (see :mod:`greenshift.cli`)."""

from __future__ import annotations

import sys

from greenshift.cli import main

if __name__ == "__main__":
    sys.exit(main())
