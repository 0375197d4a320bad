"""Test services and the rules that keep the suite from hanging.

Services: the first e2e test starts what is not already running (scripts/asterisk.sh,
scripts/redis.sh) and the session stops what it started. Under pytest-xdist each lane
(tests/lane.py) starts and stops its own, on its own ports. When something is missing
an e2e test is skipped on a developer's machine, but with ``CI=true`` (or
``SPEAKING_REQUIRE_SERVICES=1``) it fails: CI never skips silently.

No hangs, no leftovers:
* every async test runs under a deadline (``DEFAULT_DEADLINE_S``, or
  ``@pytest.mark.deadline(seconds)``); pytest-timeout (pyproject.toml) is the backstop
  for everything else, fixtures and sync tests included;
* a guardian process (tests/guardian.py) stops the services this run started even if
  the run is killed; child processes are started with a parent-death signal;
* SIGTERM is handled like Ctrl-C: the running test is cancelled and cleans up;
* after every e2e test Asterisk's ARI is checked for the asterisk#2170 deadlock; a
  wedged Asterisk fails that test, says so, and is restarted for the rest of the run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.lane import INSTANCES_PER_LANE, LANE, REDIS_BLOCK
from tests.telephony.ari import Ari, AriEvents

ROOT = Path(__file__).resolve().parent.parent
# The lane's own Asterisk instance and Redis (tests/lane.py); the environment moves the base.
INSTANCE = int(os.environ.get("SPEAKING_ASTERISK_INSTANCE", "0")) + INSTANCES_PER_LANE * LANE
#: A second Asterisk instance of this lane: "another machine" for scale-out tests.
SECOND_INSTANCE = INSTANCE + 1
REDIS_PORT = int(os.environ.get("SPEAKING_REDIS_PORT", "6399")) + REDIS_BLOCK * LANE
ARI_URL = f"http://127.0.0.1:{8088 + INSTANCE}/ari"
#: Asterisk's RTP port range (first, last), as scripts/asterisk.sh configures it.
RTP_PORTS = (10000, 19999) if INSTANCE == 0 else (20000 + INSTANCE * 1000, 20999 + INSTANCE * 1000)
ARI_AUTH = ("speaking", "speaking-dev-secret")
REQUIRED = (
    os.environ.get("CI", "").lower() == "true" or os.environ.get("SPEAKING_REQUIRE_SERVICES") == "1"
)
DEFAULT_DEADLINE_S = 120.0

_state: dict[str, Any] = {}


# -- services -----------------------------------------------------------------------------


class _Guard:
    """The services this run started, as the guardian process will stop them."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="speaking-test-services-")
        os.close(fd)
        self.path = Path(name)
        self.lines: list[str] = []
        read_end, self._write_end = os.pipe()  # both non-inheritable: children never hold it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.guardian", str(self.path)],
            cwd=ROOT,
            stdin=read_end,
            start_new_session=True,  # a signal to the test's process group spares it
        )
        os.close(read_end)

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)
            self.path.write_text("\n".join(self.lines) + "\n")

    def discard(self, line: str) -> None:
        if line in self.lines:
            self.lines.remove(line)
            self.path.write_text("\n".join(self.lines) + "\n")

    def release(self) -> None:
        """Nothing left to guard: let the guardian go (it stops whatever is still listed)."""
        os.close(self._write_end)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)


def bring_up() -> str | None:
    """Start missing services; return why they cannot run, or None when all are up.
    Under pytest, what it starts is put on the guardian's list; a bench that calls it
    leaves the services running."""
    for binary in ("sipp", "tcpdump", "redis-server", "debootstrap", "setpriv"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (run scripts/setup.sh)"
    if os.geteuid() != 0:
        return "e2e tests need root (chroot for Asterisk, raw sockets for SIPp, tcpdump)"
    guard: _Guard | None = _state.get("guard")
    if _run(str(ROOT / "scripts/asterisk.sh"), "status", str(INSTANCE)).returncode != 0:
        if guard is not None:
            guard.add(f"asterisk {INSTANCE}")
        _state["asterisk_owned"] = True
        result = _run(str(ROOT / "scripts/asterisk.sh"), "start", str(INSTANCE))
        if result.returncode != 0:
            return f"Asterisk did not start: {result.stderr[-2000:]}"
    if _run("redis-cli", "-p", str(REDIS_PORT), "ping").stdout.strip() != "PONG":
        if guard is not None:
            guard.add(f"redis {REDIS_PORT}")
        result = subprocess.run(
            [str(ROOT / "scripts/redis.sh"), "start", "--empty"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={**os.environ, "SPEAKING_REDIS_PORT": str(REDIS_PORT)},
        )
        if result.returncode != 0:
            return f"redis did not start: {result.stderr[-2000:]}"
    return None


def asterisk_ctl(action: str, instance: int = INSTANCE) -> None:
    """``scripts/asterisk.sh <action> <instance>`` (blocking: call it from a thread).
    Instances this run owns are kept on the guardian's list while they run."""
    owned = instance != INSTANCE or _state.get("asterisk_owned", False)
    guard: _Guard | None = _state.get("guard")
    if owned and guard is not None and action == "start":
        guard.add(f"asterisk {instance}")  # before starting: a kill mid-start is covered
    subprocess.run(
        [str(ROOT / "scripts/asterisk.sh"), action, str(instance)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    if owned and guard is not None and action == "stop":
        guard.discard(f"asterisk {instance}")


def asterisk_pid(instance: int = INSTANCE) -> int:
    """The pid of a running Asterisk instance started by scripts/asterisk.sh."""
    run_dir = os.environ.get("SPEAKING_RUN_DIR", "/var/run/speaking")
    return int(Path(f"{run_dir}/asterisk-{instance}/pid").read_text())


async def frozen_asterisk(seconds: float, instance: int = INSTANCE) -> None:
    """Freeze Asterisk (SIGSTOP) for ``seconds``; it is always thawed (SIGCONT) again."""
    pid = asterisk_pid(instance)
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def redis_ctl(action: str, port: int, *options: str) -> None:
    """``scripts/redis.sh <action>`` for the Redis on ``port`` (blocking: call it from a
    thread). A Redis this run starts stays on the guardian's list while it runs."""
    guard: _Guard | None = _state.get("guard")
    if guard is not None and action == "start" and port != REDIS_PORT:
        guard.add(f"redis {port}")
    subprocess.run(
        [str(ROOT / "scripts/redis.sh"), action, *options],
        check=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "SPEAKING_REDIS_PORT": str(port)},
    )
    if guard is not None and action == "stop" and port != REDIS_PORT:
        guard.discard(f"redis {port}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deadline(seconds): time limit of an async test")
    # The process that runs tests guards the services it starts: each xdist worker its own
    # lane's; an xdist controller runs no test and starts nothing.
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        _state["guard"] = _Guard()
    # SIGTERM like Ctrl-C: asyncio's runner then cancels the running test, whose cleanup
    # runs (hanging up calls, stopping processes) before pytest ends the session.
    signal.signal(signal.SIGTERM, _as_interrupt)


def _as_interrupt(signum: int, frame: Any) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("e2e") is None:
        return
    if "problem" not in _state:
        _state["problem"] = bring_up()
    problem = _state["problem"]
    if problem:
        if REQUIRED:
            pytest.fail(f"e2e services unavailable: {problem}", pytrace=False)
        pytest.skip(f"e2e services unavailable: {problem}")


def pytest_unconfigure(config: pytest.Config) -> None:
    guard: _Guard | None = _state.pop("guard", None)
    if guard is not None:
        guard.release()


# -- deadlines ----------------------------------------------------------------------------


#: Collection order, longest first: pytest-xdist hands tests to lanes in this order, so
#: the long real-time tests start at once and the quick unit tests fill the gaps at the end.
_FIRST = ("tests/e2e/test_soak.py", "tests/e2e/", "tests/telephony/")


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((i for i, prefix in enumerate(_FIRST) if path.startswith(prefix)), len(_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: a file's tests keep their order
    for item in items:
        function = getattr(item, "obj", None)
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(function):
            marker = item.get_closest_marker("deadline")
            limit = float(marker.args[0]) if marker else DEFAULT_DEADLINE_S
            item.obj = _with_deadline(function, limit, item.nodeid)


def _with_deadline(
    test: Callable[..., Coroutine[Any, Any, Any]], limit: float, name: str
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The test, cancelled after ``limit`` seconds: its own cleanup (``finally``,
    ``async with``) runs, and the hang becomes a failure that names it."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await test(*args, **kwargs)
        except TimeoutError:
            if deadline.expired():
                pytest.fail(f"{name} did not finish within {limit:.0f} s", pytrace=True)
            raise

    return run


# -- the harness's ARI app ----------------------------------------------------------------


@pytest.fixture(scope="session")
async def harness_events() -> AsyncIterator[AriEvents]:
    """The one long-lived harness app on the test Asterisk (never one per test: see
    tests/telephony/ari.py), subscribed to the endpoints the test calls use."""
    ari = Ari(ARI_URL, ARI_AUTH)
    events = await ari.events(f"harness-{os.getpid()}")
    _state["harness"] = events
    yield events
    del _state["harness"]
    await events.close()
    await ari.close()


@pytest.fixture(autouse=True)
async def asterisk_not_wedged(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After every e2e test: fail it if Asterisk's ARI deadlocked (asterisk#2170) and
    restart Asterisk, so the rest of the run goes on."""
    yield
    if request.node.get_closest_marker("e2e") is None or _state.get("problem") is not None:
        return
    ari = Ari(ARI_URL, ARI_AUTH)
    try:
        wedged = await ari.wedged()
    finally:
        await ari.close()
    if not wedged:
        return
    await asyncio.to_thread(asterisk_ctl, "stop", INSTANCE)
    await asyncio.to_thread(asterisk_ctl, "start", INSTANCE)
    harness: AriEvents | None = _state.get("harness")
    if harness is not None:
        await harness.connect()
    pytest.fail(
        "Asterisk's ARI deadlocked during this test (asterisk/asterisk#2170: REST answers, "
        "GET /applications and new events websockets hang); Asterisk was restarted",
        pytrace=False,
    )
