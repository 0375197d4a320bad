"""W simulated workers in one process, for bench/locate_fanout.py (its child process).

Each simulated worker uses the worker's own Redis code, so its traffic is a real
worker's: ``Presence`` (lease + heartbeat every second), ``Recovery.sweep`` every
``JANITOR_S`` (the directory read of the janitor; the ARI side answers "nothing here"),
``Store.read_commands`` on its own stream with the consumer group, and its replies
through a ``WriteQueue`` into ``Store.finish_commands`` (batched MULTI, as
``ReplyWriter`` does). Only the ARI lookup of ``locate`` is simulated: a sleep of
``BENCH_FLEET_THINK_MS``, one at a time per worker when ``BENCH_FLEET_SERIAL=1`` (one
Asterisk answers a worker's lookups about 2 ms apart, bench/README.md). The worker
whose id starts the reference id (``<worker id>-call-<n>``) says found.

Configured by environment (it runs as ``python -m bench.locate_fleet`` under
tests.e2e.processes.ServiceProcess): ``SPEAKING_REDIS_URL``, ``SPEAKING_REDIS_PREFIX``,
``BENCH_FLEET_WORKERS``, ``BENCH_FLEET_THINK_MS``, ``BENCH_FLEET_SERIAL``. Logs
``fleet ready`` on stderr once every worker holds its id; SIGUSR2 pauses (or resumes)
the janitors, logging ``janitor paused`` / ``janitor on``; SIGTERM unregisters them.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import secrets
import signal
import sys
from typing import Any, cast

from redis.asyncio import Redis

from worker.ari import AriClient
from worker.commands import Locate, parse_command
from worker.maintenance import JANITOR_S
from worker.presence import Presence
from worker.recovery import Recovery
from worker.redis_retry import connect
from worker.resources import ChannelWaiters, resource_tag
from worker.store import Keys, Store
from worker.write_queue import WriteQueue

PROVIDERS = ["offline"]


class EmptyAsterisk:
    """The two ARI calls of the janitor's sweep, on an Asterisk with nothing of ours."""

    async def list_channels(self) -> list[dict[str, Any]]:
        return []

    async def list_bridges(self) -> list[dict[str, Any]]:
        return []


class SimulatedWorker:
    def __init__(
        self,
        url: str,
        keys: Keys,
        worker_id: str,
        think_s: float,
        serial: bool,
        sweeping: asyncio.Event,
    ) -> None:
        # A real worker's pool is 32; three loops block at most one connection each here.
        self.redis: Redis = connect(url, 8, 10.0)
        self.store = Store(self.redis, worker_id, keys)
        self.worker_id = worker_id
        self.instance = secrets.token_hex(8)
        self.tag = resource_tag(keys.prefix, worker_id)
        self.think_s = think_s
        self._lookup = asyncio.Lock() if serial else None
        self.replies: WriteQueue[tuple[str, dict[str, Any], str]] = WriteQueue(
            self.store.finish_commands
        )
        self.presence = Presence(self.store, self.instance, self._info, lambda: [], lambda: None)
        ari = cast(AriClient, EmptyAsterisk())
        self.recovery = Recovery(
            self.store, ari, ChannelWaiters(), self.tag, lambda _e: None, lambda _s: False
        )
        self._side: set[asyncio.Task[None]] = set()
        self._sweeping = sweeping

    def _info(self) -> dict[str, Any]:  # the fields of Worker._heartbeat_info
        return {
            "ari_url": "http://127.0.0.1:8088/ari",
            "tag": self.tag,
            "instance": self.instance,
            "sessions": 0,
            "providers": PROVIDERS,
        }

    async def start(self) -> None:
        await self.presence.take_worker_id()
        await self.store.ensure_group()
        await self.store.heartbeat(self._info())  # listed at once, not after a beat

    def loops(self) -> list[asyncio.Task[None]]:
        """The worker's loops, as tasks (each ends only when cancelled, or on a bug)."""
        return [
            asyncio.create_task(loop, name=f"{self.worker_id}-{name}")
            for name, loop in (
                ("presence", self.presence.run()),
                ("replies", self.replies.run()),
                ("janitor", self._janitor()),
                ("reader", self._read()),
            )
        ]

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(JANITOR_S)
            await self._sweeping.wait()
            await self.recovery.sweep()

    async def _read(self) -> None:
        while True:
            for entry_id, fields in await self.store.read_commands(pending=False):
                command = parse_command(fields)
                assert isinstance(command, Locate), command
                task = asyncio.create_task(self._locate(entry_id, command))
                self._side.add(task)
                task.add_done_callback(self._side.discard)

    async def _locate(self, entry_id: str, command: Locate) -> None:
        if self._lookup is None:
            await asyncio.sleep(self.think_s)
        else:
            async with self._lookup:
                await asyncio.sleep(self.think_s)
        found = command.reference_id.startswith(f"{self.worker_id}-call-")
        body = {
            "ok": True,
            "command_id": command.command_id,
            "found": found,
            "state": "Up" if found else "",
            "owner": "cust-1" if found else "",
            "providers": PROVIDERS,
        }
        self.replies.put((command.command_id, body, entry_id))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.unregister(self.instance)
        await self.redis.aclose()


def toggle(sweeping: asyncio.Event) -> None:
    """SIGUSR2: pause or resume the janitors (the bench measures locates without their
    O(W^2) background, which it measures on its own)."""
    if sweeping.is_set():
        sweeping.clear()
    else:
        sweeping.set()
    state = "on" if sweeping.is_set() else "paused"
    print(f'{{"message": "janitor {state}"}}', file=sys.stderr, flush=True)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> bool:
    """Cancel until they are done. Seen once after a heavy burst: one cancel did not end
    every loop and the fleet never exited (not pinned down; Python 3.11's
    ``asyncio.wait_for`` can swallow a cancel that arrives as its inner wait ends)."""
    pending = set(tasks)
    for _ in range(20):
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
        if not pending:
            return True
        names = sorted(t.get_name() for t in pending)[:5]
        print(f'{{"message": "survived a cancel", "tasks": {names}}}', file=sys.stderr)
        next(iter(pending)).print_stack(file=sys.stderr)
    return False


def worker_ids(count: int) -> list[str]:
    return [f"fleet-{i:03d}" for i in range(count)]


async def main() -> None:
    faulthandler.register(signal.SIGUSR1)  # a stuck fleet shows where (kill -USR1)
    url = os.environ["SPEAKING_REDIS_URL"]
    keys = Keys(os.environ.get("SPEAKING_REDIS_PREFIX", "speaking"))
    think_s = float(os.environ.get("BENCH_FLEET_THINK_MS", "4")) / 1000
    serial = os.environ.get("BENCH_FLEET_SERIAL", "1") == "1"
    count = int(os.environ["BENCH_FLEET_WORKERS"])
    sweeping = asyncio.Event()
    sweeping.set()
    workers = [SimulatedWorker(url, keys, w, think_s, serial, sweeping) for w in worker_ids(count)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, toggle, sweeping)
    async with asyncio.timeout(60):
        await asyncio.gather(*(w.start() for w in workers))
    print(f'{{"message": "fleet ready", "workers": {count}}}', file=sys.stderr, flush=True)
    tasks = [task for w in workers for task in w.loops()]
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    print('{"message": "fleet stopping"}', file=sys.stderr, flush=True)
    ended = await cancel_all(tasks)
    print('{"message": "fleet cancelled"}', file=sys.stderr, flush=True)
    async with asyncio.timeout(10):
        await asyncio.gather(*(w.close() for w in workers))
    print('{"message": "fleet closed"}', file=sys.stderr, flush=True)
    if not ended:  # asyncio.run would wait for them again, for good
        os._exit(0)
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if failed:  # a worker loop died: the run's numbers are not a real fleet's
        print(f'{{"level": "error", "message": "{failed[0].exception()!r}"}}', file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
