"""Run one SIPp as a child process, and pick free UDP ports for it.

SIPp runs in the foreground with -nostdin (no terminal needed), one call (-m 1),
all its logs in the call's work directory, and a global -timeout so it cannot
outlive a harness that was killed; setpriv --pdeathsig is a second guard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import shutil
import signal
import socket
from pathlib import Path
from typing import BinaryIO

from tests.lane import sipp_port_range

SCENARIOS = Path(__file__).with_name("scenarios")


#: (base, span) of the last picks: far fewer than the range holds, so a pick always ends.
_recent: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)


class SippError(RuntimeError):
    """A SIPp process failed; the message carries its stderr and error log."""


def pick_ports(count: int, span: int = 1) -> list[int]:
    """`count` base ports, each with `span` consecutive UDP ports free on 127.0.0.1.

    Random picks below the kernel's ephemeral range (32768+) and above Asterisk's
    RTP ranges (10000-19999 for instance 0, 20000 + 1000 * instance for the others:
    scripts/asterisk.sh), checked by binding; the sockets are held
    until all are chosen so two picks cannot overlap. Each lane of a parallel run picks
    in its own slice of the range (tests/lane.py), so lanes cannot race for a port. The
    ports handed out recently are not handed out again: participants joined side by side
    pick theirs before any SIPp has bound the earlier ones.
    """
    low, high = sipp_port_range()
    held: list[socket.socket] = []
    bases: list[int] = []
    try:
        while len(bases) < count:
            base = random.randrange(low, high - span) & ~1  # even, as RTP wants
            if any(b < base + span and base < b + n for b, n in _recent):
                continue
            socks = []
            try:
                for port in range(base, base + span):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind(("127.0.0.1", port))
            except OSError:
                for s in socks:
                    s.close()
                continue
            held.extend(socks)
            bases.append(base)
            _recent.append((base, span))
    finally:
        for s in held:
            s.close()
    return bases


class SippProcess:
    """One SIPp child: started with a scenario and arguments, logs in workdir."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_path = workdir / f"{name}.stderr"
        self.error_log = workdir / f"{name}_errors.log"
        self.message_log = workdir / f"{name}_messages.log"

    async def start(
        self, scenario: str, args: list[str], keys: dict[str, str], calls: int = 1
    ) -> None:
        """Launch `sipp -sf scenarios/<scenario> ...` for ``calls`` calls (then it exits);
        returns once the process exists."""
        sipp = shutil.which("sipp") or "/usr/bin/sipp"
        cmd = [
            sipp,
            *args,
            "-sf",
            str(SCENARIOS / scenario),
            "-nostdin",
            "-m",
            str(calls),
            "-trace_err",
            "-error_file",
            str(self.error_log),
            "-trace_msg",
            "-message_file",
            str(self.message_log),
        ]
        for key, value in keys.items():
            cmd += ["-key", key, value]
        setpriv = shutil.which("setpriv")
        if setpriv:
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        (self.workdir / f"{self.name}.cmd").write_text(" ".join(cmd) + "\n")
        out, err = self._open_logs()
        with out, err:  # the child keeps its own copies of the descriptors
            self.proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.workdir,
            )

    def _open_logs(self) -> tuple[BinaryIO, BinaryIO]:
        """Files for SIPp's screen dumps (stdout) and fatal errors (stderr)."""
        return open(self.workdir / f"{self.name}.screen", "wb"), open(self.stderr_path, "wb")

    @property
    def returncode(self) -> int | None:
        """Exit status once it ended, else None."""
        return self.proc.returncode if self.proc else None

    async def wait(self) -> int:
        """Wait for the process to end; its exit status."""
        assert self.proc is not None
        return await self.proc.wait()

    def failure(self, what: str) -> SippError:
        """An error describing how this SIPp ended, with its stderr and error log."""
        parts = [f"SIPp {self.name} {what} (exit status {self.returncode})"]
        for path in (self.stderr_path, self.error_log):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {path.name}:\n{text[-4000:]}")
        return SippError("\n".join(parts))

    async def stop(self, grace: float = 3.0) -> None:
        """Let it finish on its own for `grace` seconds, then SIGTERM, then SIGKILL; reap."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            try:
                async with asyncio.timeout(grace if sig is None else 2.0):
                    await proc.wait()
                return
            except TimeoutError:
                continue
