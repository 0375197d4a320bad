"""Events on their way to Redis: queued without awaiting (the clock tick emits them),
published in order by one task, in batches, kept through a Redis outage.

The queue is bounded. When it is full, segment events are dropped (and counted) so
that lifecycle events, which say a session started or stopped, are never lost: they
are few (two per session) and always kept.
"""

from __future__ import annotations

from worker.events import Event, EventType
from worker.metrics import Registry
from worker.store import Store
from worker.write_queue import WriteQueue

MAX_QUEUED = 10_000
_LIFECYCLE = {EventType.SPEAKING_STARTED, EventType.SPEAKING_STOPPED}


class Outbox(WriteQueue[Event]):
    """The worker's event queue (``run`` is a supervised task)."""

    def __init__(self, store: Store, metrics: Registry, max_queued: int = MAX_QUEUED) -> None:
        super().__init__(self._publish, batch=100)
        self._store = store
        self._metrics = metrics
        self._max = max_queued
        metrics.describe("speaking_events_total", "counter", "Events published, by type")
        metrics.describe(
            "speaking_events_dropped_total", "counter", "Segment events dropped: outbox full"
        )

    def emit(self, event: Event) -> None:
        """Queue an event. Never awaits."""
        if len(self) >= self._max and event.type not in _LIFECYCLE:
            self._metrics.inc("speaking_events_dropped_total", type=event.type.value)
            return
        self.put(event)

    async def _publish(self, events: list[Event]) -> None:
        await self._store.publish(events)
        for event in events:
            self._metrics.inc("speaking_events_total", type=event.type.value)
