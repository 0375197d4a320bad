"""Test services: a real Asterisk, Redis and SIPp for the tests marked ``e2e``.

The first e2e test starts what is not already running (scripts/asterisk.sh,
scripts/redis.sh) and the session stops what it started. When something is
missing an e2e test is skipped on a developer's machine, but with ``CI=true``
(or ``SPEAKING_REQUIRE_SERVICES=1``) it fails: CI never skips silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = int(os.environ.get("SPEAKING_ASTERISK_INSTANCE", "0"))
REDIS_PORT = int(os.environ.get("SPEAKING_REDIS_PORT", "6399"))
REQUIRED = (
    os.environ.get("CI", "").lower() == "true" or os.environ.get("SPEAKING_REQUIRE_SERVICES") == "1"
)

_state: dict[str, object] = {}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)


def _bring_up() -> str | None:
    """Start missing services; return why they cannot run, or None when all are up."""
    for binary in ("sipp", "tcpdump", "redis-server", "debootstrap"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (run scripts/setup.sh)"
    if os.geteuid() != 0:
        return "e2e tests need root (chroot for Asterisk, raw sockets for SIPp, tcpdump)"
    started: list[tuple[str, ...]] = []
    if _run(str(ROOT / "scripts/asterisk.sh"), "status", str(INSTANCE)).returncode != 0:
        result = _run(str(ROOT / "scripts/asterisk.sh"), "start", str(INSTANCE))
        if result.returncode != 0:
            return f"Asterisk did not start: {result.stderr[-2000:]}"
        started.append((str(ROOT / "scripts/asterisk.sh"), "stop", str(INSTANCE)))
    if _run("redis-cli", "-p", str(REDIS_PORT), "ping").stdout.strip() != "PONG":
        result = _run(str(ROOT / "scripts/redis.sh"), "start")
        if result.returncode != 0:
            return f"redis did not start: {result.stderr[-2000:]}"
        started.append((str(ROOT / "scripts/redis.sh"), "stop"))
    _state["started"] = started
    return None


def asterisk_ctl(action: str, instance: int = INSTANCE) -> None:
    """``scripts/asterisk.sh <action> <instance>`` (blocking: call it from a thread)."""
    subprocess.run(
        [str(ROOT / "scripts/asterisk.sh"), action, str(instance)],
        check=True,
        capture_output=True,
        timeout=300,
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("e2e") is None:
        return
    if "problem" not in _state:
        _state["problem"] = _bring_up()
    problem = _state["problem"]
    if problem:
        if REQUIRED:
            pytest.fail(f"e2e services unavailable: {problem}", pytrace=False)
        pytest.skip(f"e2e services unavailable: {problem}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for command in reversed(_state.get("started", [])):  # type: ignore[call-overload]
        _run(*command)
