"""Stops what a test run started, however the run ends.

``python -m tests.guardian STATE_FILE`` is started by the test session (tests/conftest.py)
in a session of its own, with the read end of a pipe as its stdin; the test process
holds the only write end. When that process ends for any reason (done, SIGTERM,
SIGKILL, a per-test timeout that exits the interpreter), the pipe reaches end of file
and the guardian runs the stop command of every service still listed in STATE_FILE
(one per line: ``asterisk N`` or ``redis PORT``). Child processes of the test run (worker,
API, SIPp, tcpdump) need no guardian: they are started with a parent-death signal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 60


def stop_commands(lines: list[str]) -> list[list[str]]:
    """The command that stops each listed service, in reverse start order."""
    commands: list[list[str]] = []
    for line in reversed(lines):
        match line.split():
            case ["asterisk", instance]:
                commands.append([str(ROOT / "scripts/asterisk.sh"), "stop", instance])
            case ["redis", port]:
                redis = str(ROOT / "scripts/redis.sh")
                commands.append(["env", f"SPEAKING_REDIS_PORT={port}", redis, "stop"])
    return commands


def main() -> None:
    state = Path(sys.argv[1])
    sys.stdin.buffer.read()  # returns once the test process is gone
    lines = state.read_text().splitlines() if state.exists() else []
    for command in stop_commands(lines):
        try:
            subprocess.run(command, capture_output=True, timeout=STOP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            print(f"guardian: {' '.join(command)} timed out", file=sys.stderr)
    state.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
