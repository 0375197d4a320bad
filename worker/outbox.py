"""Events on their way to Redis: queued without awaiting (the clock tick emits them),
published in order by one task, kept through a Redis outage.

The queue is bounded. When it is full, segment events are dropped (and counted) so
that lifecycle events, which say a session started or stopped, are never lost: they
are few (two per session) and always kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import partial

from worker.events import Event, EventType
from worker.metrics import Registry
from worker.redis_retry import retry_through_outage
from worker.store import Store

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
_LIFECYCLE = {EventType.SPEAKING_STARTED, EventType.SPEAKING_STOPPED}


class Outbox:
    """The worker's event queue and its publisher (``run``, a supervised task)."""

    def __init__(self, store: Store, metrics: Registry, max_queued: int = MAX_QUEUED) -> None:
        self._store = store
        self._metrics = metrics
        self._max = max_queued
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        metrics.describe("speaking_events_total", "counter", "Events published, by type")
        metrics.describe(
            "speaking_events_dropped_total", "counter", "Segment events dropped: outbox full"
        )

    def emit(self, event: Event) -> None:
        """Queue an event. Never awaits."""
        if len(self._queue) >= self._max and event.type not in _LIFECYCLE:
            self._metrics.inc("speaking_events_dropped_total", type=event.type.value)
            return
        self._queue.append(event)
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
            event = self._queue[0]  # published before it leaves the queue: never lost
            await retry_through_outage(partial(self._store.publish, event))
            self._queue.popleft()
            self._metrics.inc("speaking_events_total", type=event.type.value)

    async def drained(self) -> None:
        """Wait until every queued event is published."""
        await self._empty.wait()
