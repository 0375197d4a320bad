"""Say which requirements pyproject.toml and uv.lock disagree on, without the network.

``uv lock --locked`` answers the same question, but it re-resolves to answer it, and
offline, on a machine whose uv cache is empty, it fails on the first package it cannot
look up instead of naming the requirement that changed. The lock records the project's
own requirements as it saw them (``[package.metadata]`` of the project's entry), so
comparing those with pyproject.toml is enough to name an added, removed or changed one.

Usage: ``python3 scripts/lock_drift.py [project_dir]``; exit 0 when they agree, 1 (with
one line per difference on stderr) when they do not.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _from_pyproject(requirement: str) -> tuple[str, str]:
    match = _NAME.fullmatch(requirement)
    if match is None:
        return requirement, ""
    return _normal(match[1]), match[2].replace(" ", "")


def _from_lock(entry: dict[str, str]) -> tuple[str, str]:
    specifier = entry.get("specifier", "")
    if "marker" in entry:
        specifier += f";{entry['marker']}"
    return _normal(entry["name"]), specifier.replace(" ", "")


def _shown(requirement: tuple[str, str]) -> str:
    return requirement[0] + requirement[1]


def drift(project: Path) -> list[str]:
    """One line per requirement the two files disagree on (empty when they agree)."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    lock = tomllib.loads((project / "uv.lock").read_text())
    name = _normal(pyproject["project"]["name"])
    entry = next(p for p in lock.get("package", []) if _normal(p["name"]) == name)
    metadata = entry.get("metadata", {})
    groups: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
        "dependencies": (
            [_from_pyproject(r) for r in pyproject["project"].get("dependencies", [])],
            [_from_lock(r) for r in metadata.get("requires-dist", [])],
        )
    }
    wanted_groups = pyproject.get("dependency-groups", {})
    locked_groups = metadata.get("requires-dev", {})
    for group in sorted(set(wanted_groups) | set(locked_groups)):
        groups[f"dependency group {group!r}"] = (
            [_from_pyproject(r) for r in wanted_groups.get(group, [])],
            [_from_lock(r) for r in locked_groups.get(group, [])],
        )
    lines = []
    for where, (wanted, locked) in groups.items():
        lines += [
            f"{where}: {_shown(r)} is in pyproject.toml, not in uv.lock"
            for r in sorted(set(wanted) - set(locked))
        ]
        lines += [
            f"{where}: {_shown(r)} is in uv.lock, no longer in pyproject.toml"
            for r in sorted(set(locked) - set(wanted))
        ]
    return lines


if __name__ == "__main__":
    differences = drift(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    for line in differences:
        print(line, file=sys.stderr)
    sys.exit(1 if differences else 0)
