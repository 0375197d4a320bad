"""Command replies on their way to Redis: queued without awaiting, written in batches.

Each reply is the command's stored result, the answer its sender waits for, and the
acknowledgement of its stream entry (docs/redis-protocol.md). Written one by one, a
flood of commands into one session (most of them refused) would take a Redis round trip
each and hold up every other session's answers behind it; one task writing whatever is
queued in one transaction keeps a flood to a few round trips. A batch stays queued
until Redis took it, so an outage delays replies and loses none.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import Any

from worker.metrics import Registry
from worker.redis_retry import retry_through_outage
from worker.store import Store

BATCH = 256


class ReplyWriter:
    """The worker's queue of replies and the task that writes them (``run``, supervised)."""

    def __init__(self, store: Store, metrics: Registry) -> None:
        self._store = store
        self._metrics = metrics
        self._queue: deque[tuple[str, dict[str, Any], str]] = deque()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._written = asyncio.Event()

    def put(self, command_id: str, body: dict[str, Any], entry_id: str) -> None:
        """Queue a reply. Never awaits."""
        outcome = "ok" if body.get("ok") else str(body.get("error", {}).get("code", "?"))
        self._metrics.inc("speaking_commands_total", outcome=outcome)
        self._queue.append((command_id, body, entry_id))
        self._empty.clear()
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        while True:
            while not self._queue:
                self._empty.set()
                self._ready.clear()
                await self._ready.wait()
            batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            await retry_through_outage(partial(self._store.finish_commands, batch))
            for _ in batch:  # only once written: a crash before replays the commands
                self._queue.popleft()
            self._written.set()

    async def below(self, count: int) -> None:
        """Wait until at most ``count`` replies are queued (back-pressure for the reader)."""
        while len(self._queue) > count:
            self._written.clear()
            await self._written.wait()

    async def drained(self) -> None:
        """Wait until every queued reply is written."""
        await self._empty.wait()
