"""The product's processes as test children: started the way they are deployed, their
JSON log lines kept, ready when a given line appears, and never outliving the test
run (a parent-death signal covers a killed run)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ARI_AUTH, ARI_URL, INSTANCE, REDIS_PORT, ROOT


def child_command(*argv: str) -> list[str]:
    """``argv`` with a parent-death signal: the child dies with the test process, however
    that ends (the services' guardian covers Asterisk and Redis, see tests/conftest.py)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else list(argv)


class ServiceProcess:
    """``python -m <module>`` as a child; its stderr (JSON log lines) kept in ``lines``
    and written to ``log_path``."""

    def __init__(self, module: str, log_path: Path, env: Mapping[str, str], ready: str) -> None:
        self.module = module
        self.log_path = log_path
        self.env = dict(env)
        self._ready_line = ready
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._ready = asyncio.Event()
        self._log_task: asyncio.Task[None] | None = None

    async def start(self, within_s: float = 30.0) -> None:
        """Start it and return once it logged its ready line; AssertionError (with the
        log's tail) if it exited first, or did not get ready within ``within_s`` (then it
        is stopped)."""
        await self.launch()
        assert self.proc is not None
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.proc.wait())
        try:
            await asyncio.wait(
                {ready, exited}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (ready, exited):
                task.cancel()
        if self._ready.is_set():
            return
        if self.proc.returncode is not None:
            if self._log_task is not None:  # the rest of what it said
                await asyncio.wait({self._log_task}, timeout=5)
            raise AssertionError(
                f"{self.module} exited ({self.proc.returncode}) before it was ready:\n"
                + self.tail()
            )
        await self.stop(signal.SIGKILL)
        raise AssertionError(
            f"{self.module} did not get ready within {within_s} s:\n" + self.tail()
        )

    async def launch(self) -> None:
        """Start the process without waiting for it to be ready."""
        self.proc = await asyncio.create_subprocess_exec(
            *child_command(sys.executable, "-m", self.module),
            env=self.env,
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._log_task = asyncio.create_task(self._read_log(), name=f"log-{self.module}")

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.log_path.open("w") as out:
            async for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                out.write(line)
                out.flush()
                if self._ready_line in line:
                    self._ready.set()

    async def stop(self, sig: int = signal.SIGTERM, within_s: float = 20.0) -> int:
        """Send ``sig`` and reap; SIGKILL if it has not exited within ``within_s``.
        Returns the exit status (negative: the signal that ended it)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(within_s):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"{self.module} did not exit within {within_s} s of signal {sig}:\n" + self.tail()
            ) from None
        if self._log_task:
            async with asyncio.timeout(5):  # stderr ends with the process
                await self._log_task
        return code

    async def exited(self, within_s: float = 20.0) -> int:
        """Wait for the process to end by itself; its exit status."""
        assert self.proc is not None
        async with asyncio.timeout(within_s):
            code = await self.proc.wait()
        if self._log_task:
            async with asyncio.timeout(5):
                await self._log_task
        return code

    def tail(self, lines: int = 30) -> str:
        return "".join(self.lines[-lines:])

    def errors(self) -> list[str]:
        return [line for line in self.lines if '"level": "error"' in line]


#: A Redis of one test's own (stopped and restarted by fault tests), in the lane's block.
PRIVATE_REDIS_PORT = REDIS_PORT + 12
PRIVATE_REDIS_URL = f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"


SIP_PORT = 5060 + 100 * INSTANCE
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
#: Test clients of Redis: a frozen or stopped Redis must fail a test, not hang it (the
#: read timeout is above every BLPOP/XREAD block the tests use).
REDIS_SOCKET_TIMEOUT_S = 30.0
REDIS_CONNECT_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class WorkerProcess(ServiceProcess):
    """``speaking-worker`` as a child process, the way it is deployed."""

    def __init__(self, worker_id: str, log_path: Path, **env: str) -> None:
        self.worker_id = worker_id
        self.metrics_port = free_port()
        environment = {
            **os.environ,
            "SPEAKING_WORKER_ID": worker_id,
            "SPEAKING_REDIS_URL": REDIS_URL,
            "SPEAKING_ARI_URL": ARI_URL,
            "SPEAKING_ARI_PASSWORD": ARI_AUTH[1],
            "SPEAKING_ARI_APP": f"speaking-{worker_id}",
            "SPEAKING_METRICS_PORT": str(self.metrics_port),
            **env,
        }
        super().__init__("worker.daemon", log_path, environment, ready='"worker ready"')

    async def health(self) -> tuple[int, dict[str, Any]]:
        """GET /healthz: its status and JSON body."""
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(url) as resp,
        ):
            body: dict[str, Any] = await resp.json()
            return resp.status, body

    async def metrics(self) -> str:
        """GET /metrics: the Prometheus text."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(url) as resp,
        ):
            return await resp.text()

    async def wait_health(self, status: int, within_s: float = 10.0) -> dict[str, Any]:
        """Poll /healthz until it answers ``status`` (the worker has no event to await for
        what its health check concludes); its body then."""
        async with asyncio.timeout(within_s):
            while True:
                answered, body = await self.health()
                if answered == status:
                    return body
                await asyncio.sleep(0.1)
