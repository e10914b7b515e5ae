"""`python -m modelport`: the same command line as the `modelport` script."""

from __future__ import annotations

import sys

from modelport.cli import main

if __name__ == "__main__":
    sys.exit(main())
