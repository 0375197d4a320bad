"""One clock for every session: a single task ticks every 20 ms and each
registered stream sends at most one frame per tick.

Why one clock: per-session sleep loops drift apart and cost a task wake-up per
session per frame; one schedule computed from a fixed origin (tick n is due at
``origin + n * period``) never accumulates error, and a tick costs one wake-up
however many sessions there are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

PERIOD = 0.020


class PacingSchedule:
    """When ticks are due, as a pure function of the clock readings it is given.

    If the loop was held up, the missed ticks are run at once (a short burst keeps
    audio continuous; Asterisk's whisper accepts up to 500 ms ahead). If more than
    ``max_burst`` ticks were missed the schedule restarts from now instead: those
    ticks are skipped, never the audio, which simply starts later.
    """

    def __init__(self, origin: float, period: float = PERIOD, max_burst: int = 10) -> None:
        self.period = period
        self.max_burst = max_burst
        self._origin = origin
        self._next = 0
        self.resyncs = 0
        self.max_lateness = 0.0

    @property
    def next_deadline(self) -> float:
        return self._origin + self._next * self.period

    def due(self, now: float) -> int:
        """How many ticks to run at ``now``; the schedule advances past them."""
        if now < self.next_deadline:
            return 0
        lateness = now - self.next_deadline
        self.max_lateness = max(self.max_lateness, lateness)
        behind = int(lateness // self.period) + 1
        if behind > self.max_burst:
            self.resyncs += 1
            self._origin, self._next = now, 1
            return 1
        self._next += behind
        return behind


class Tickable(Protocol):
    def tick(self) -> None:
        """Send at most one frame. Must not block and must not await."""


class Pacer:
    """Runs the shared clock while at least one stream is registered."""

    def __init__(self, period: float = PERIOD, clock: Callable[[], float] | None = None) -> None:
        self.period = period
        self._clock = clock
        self._streams: list[Tickable] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.schedule: PacingSchedule | None = None

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pacer")
            self._task.add_done_callback(_log_death)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def add(self, stream: Tickable) -> None:
        self._streams.append(stream)
        self._wake.set()

    def remove(self, stream: Tickable) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    async def _run(self) -> None:
        while True:
            if not self._streams:
                self._wake.clear()
                await self._wake.wait()
                self.schedule = None
            if self.schedule is None:  # (re)start the clock when work appears
                self.schedule = PacingSchedule(self.now(), self.period)
            delay = self.schedule.next_deadline - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            for _ in range(self.schedule.due(self.now())):
                self.ticks += 1
                # A copy: a stream's tick may finish its session and unregister it.
                for stream in tuple(self._streams):
                    try:
                        stream.tick()
                    except Exception:
                        log.exception("stream tick failed; removing it")
                        self.remove(stream)


def _log_death(task: asyncio.Task[None]) -> None:
    # The clock paces every session: if it ever dies, say so loudly.
    if not task.cancelled() and task.exception() is not None:
        log.error("pacer clock died", exc_info=task.exception())
