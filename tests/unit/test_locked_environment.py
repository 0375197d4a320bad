"""The environment is the lock: scripts/setup.sh refuses a pyproject.toml and uv.lock that
disagree, and says what differs, before it installs anything.

Runs the real setup script and the pinned uv on a copy of the project's pyproject.toml,
uv.lock and scripts, offline: the check must not need the package index (on a fresh
machine uv's cache is empty, so only scripts/lock_drift.py can name a changed requirement).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _project_copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    # The pinned uv is the one this checkout's setup installed (the suite runs after it).
    assert (ROOT / ".tools" / "bin" / "uv").exists(), "run scripts/setup.sh first"
    (tmp_path / ".tools").symlink_to(ROOT / ".tools")
    return tmp_path


def _setup(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPEAKING_VENV": str(project / ".venv"), "UV_OFFLINE": "1"}
    return subprocess.run(
        [str(project / "scripts" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_committed_lock_matches_pyproject() -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "uv.sh"), "lock", "--locked", "--offline", "--project", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_a_dependency_added_without_locking_fails_setup_and_names_it(tmp_path: Path) -> None:
    project = _project_copy(tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '    "websockets>=13",\n' in text
    pyproject.write_text(
        text.replace('    "websockets>=13",\n', '    "websockets>=13",\n    "six>=1.16",\n')
    )

    done = _setup(project)

    assert done.returncode == 1
    assert "uv.lock does not match pyproject.toml" in done.stderr
    assert "six>=1.16" in done.stderr
    assert "scripts/lock.sh" in done.stderr
    assert not (project / ".venv").exists(), "nothing is installed from a stale lock"


@pytest.mark.parametrize("package", ["yarl", "numpy"])
def test_a_pin_deleted_from_the_lock_fails_setup_and_names_it(tmp_path: Path, package: str) -> None:
    project = _project_copy(tmp_path)
    lock = project / "uv.lock"
    text = lock.read_text()
    # One [[package]] entry, up to the next one (or the end of the file).
    entry = re.compile(
        r'\[\[package\]\]\nname = "' + package + r'"\n.*?(?=\[\[package\]\]|\Z)', re.S
    )
    assert entry.search(text), package
    lock.write_text(entry.sub("", text, count=1))

    done = _setup(project)

    assert done.returncode == 1
    # uv names it as `yarl` (a dependency with no entry) or `numpy==2.4.6` (pinned, no entry).
    assert re.search(f"`{package}(==[0-9.]+)?`", done.stderr), done.stderr
    assert not (project / ".venv").exists()
