"""Test-suite set-up shared by every test."""

import os

# Must precede any llama_cpp import: OpenMP's spin-waiting collapses generation speed when
# other processes share the cores (see docs/engine.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
