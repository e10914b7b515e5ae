"""The lock files `make install` installs from are current: made from today's dependency lists
(a dependency changed in pyproject.toml without `make lock` fails here, so CI fails), every
requirement pinned to a version it allows, every pin with hashes (docs/security.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tools.lock import (
    DATA_LOCK,
    DATA_PACKAGES,
    LOCK,
    ROOT,
    digest,
    project_inputs,
    recorded_digest,
)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, list[tuple[str, int]]]:
    """Name -> (version, hash count) for every pinned entry (one per platform marker)."""
    found: dict[str, list[tuple[str, int]]] = {}
    entry: list[tuple[str, int]] | None = None
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            entry = found.setdefault(canonicalize_name(match.group(1)), [])
            entry.append((match.group(2), 0))
        elif entry is not None and line.strip().startswith("--hash=sha256:"):
            version, hashes = entry[-1]
            entry[-1] = (version, hashes + 1)
    return found


def test_the_locks_were_made_from_todays_dependency_lists() -> None:
    assert recorded_digest(LOCK) == digest(project_inputs()), (
        "pyproject.toml's dependencies changed since requirements.lock was made: run `make lock`"
    )
    assert recorded_digest(DATA_LOCK) == digest(list(DATA_PACKAGES)), "run `make lock`"


def test_every_requirement_is_pinned_to_a_version_it_allows_with_hashes() -> None:
    locked = pins(LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for text in listed:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock"
        for version, hashes in locked[name]:
            assert requirement.specifier.contains(version, prereleases=True), (name, version)
            assert hashes > 0, f"{name}=={version} has no hash"
    data = pins(DATA_LOCK)
    for text in DATA_PACKAGES:
        requirement = Requirement(text)
        [(version, hashes)] = data[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version) and hashes > 0


def test_a_changed_dependency_list_is_noticed(tmp_path: Path) -> None:
    changed = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    changed.write_text(text.replace('"msgspec>=0.22,<0.23"', '"msgspec>=0.21,<0.23"', 1))
    assert '"msgspec>=0.22,<0.23"' in text
    assert digest(project_inputs(changed)) != recorded_digest(LOCK)
