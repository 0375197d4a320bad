"""A live session's audio: its Playout on the shared clock and the Player that fills it,
with their news turned into protocol inputs (worker/session_messages.py).

Callbacks here run inside the clock tick: they only post, never await.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from worker.engines.base import Engine, Voice
from worker.events import EventType
from worker.media_format import MediaFormat
from worker.metrics import Registry
from worker.pacer import Pacer
from worker.player import Player, Segment, SegmentProblem
from worker.playout import Playout, PlayoutEvent, PlayoutEventKind
from worker.session_messages import SegmentEvent


class SessionPlayback:
    """Started when the session goes active, closed by its teardown's first step."""

    def __init__(
        self,
        fmt: MediaFormat,
        send: Callable[[bytes], None],
        rtp: bool,
        engine: Engine,
        voice: Voice,
        pacer: Pacer,
        metrics: Registry,
        post: Callable[[SegmentEvent], None],
    ) -> None:
        self._pacer = pacer
        self._metrics = metrics
        self._post = post
        self._said: dict[str, float] = {}  # segment id -> when its say was applied
        self.playout = Playout(fmt, send, self._on_playout, time.monotonic, rtp=rtp)
        self.player = Player(engine, voice, self.playout, self._on_problem)
        self.player.start()
        pacer.add(self.playout)

    def enqueue(self, segment_id: str, text: str) -> None:
        self._said[segment_id] = time.monotonic()
        self.player.enqueue(Segment(segment_id, text))

    async def flush(self) -> list[str]:
        """Silent from the next tick; the ids of the segments dropped."""
        return await self.player.flush()

    async def close(self, reason: str) -> None:
        """Off the clock at once; unfinished segments are reported flushed with ``reason``."""
        self._pacer.remove(self.playout)
        self._metrics.inc("speaking_frames_sent_total", self.playout.frames_sent)
        await self.player.close(reason)

    def _on_playout(self, event: PlayoutEvent) -> None:
        if event.kind is PlayoutEventKind.SEGMENT_STARTED:
            latency = event.at - self._said.pop(event.segment_id, event.at)
            self._metrics.observe("speaking_first_audio_seconds", latency)
            data = {"latency_ms": f"{latency * 1000:.1f}"}
            self._post(SegmentEvent(EventType.SEGMENT_STARTED, event.segment_id, data))
        else:
            self.player.notify_finished(event.segment_id)
            self._post(SegmentEvent(EventType.SEGMENT_FINISHED, event.segment_id))

    def _on_problem(self, problem: SegmentProblem) -> None:
        kind = EventType.SEGMENT_FAILED if problem.failed else EventType.SEGMENT_FLUSHED
        self._said.pop(problem.segment_id, None)
        self._post(SegmentEvent(kind, problem.segment_id, {"reason": problem.reason}))
