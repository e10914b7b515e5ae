"""`python -m benchmarks.generation`: see benchmarks/generation/runner.py."""

import sys

from benchmarks.generation.runner import main

sys.exit(main())
