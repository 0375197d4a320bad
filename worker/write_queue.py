"""Writes to Redis that must not be lost and must not be awaited where they arise.

Replies and events are produced where nothing may wait (the clock tick, the command
reader). They go into a queue that one task writes out in batches, in order. A batch
leaves the queue only once Redis took it: through an outage it waits, and a crash
before the write means the commands are replayed (their replies) or the events are
gone with the sessions (which the next start stops with ``worker_lost``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

from worker.redis_retry import retry_through_outage

T = TypeVar("T")


class WriteQueue(Generic[T]):
    """A FIFO of items and the task (``run``, supervised) that writes them in batches."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]], batch: int = 256) -> None:
        self._write = write
        self._batch = batch
        self._queue: deque[T] = deque()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._written = asyncio.Event()

    def put(self, item: T) -> None:
        """Queue an item. Never awaits."""
        self._queue.append(item)
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
            batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
            await retry_through_outage(partial(self._write, batch))
            for _ in batch:  # only once written
                self._queue.popleft()
            self._written.set()

    async def below(self, count: int) -> None:
        """Wait until at most ``count`` items are queued (back-pressure)."""
        while len(self._queue) > count:
            self._written.clear()
            await self._written.wait()

    async def drained(self) -> None:
        """Wait until every queued item is written."""
        await self._empty.wait()
