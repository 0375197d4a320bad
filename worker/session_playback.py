"""A live session's audio: its Playout on the shared clock and the Player that fills it,
with their news turned into protocol inputs (worker/session_messages.py) and into the
providers' metrics.

Callbacks here run inside the clock tick: they only post, never await.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from worker.engines.base import FailureKind, Synthesis
from worker.events import EventType
from worker.media_format import MediaFormat
from worker.metrics import Registry
from worker.pacer import Pacer
from worker.player import Player, Segment, SegmentProblem
from worker.playout import Playout, PlayoutEvent, PlayoutEventKind
from worker.session_messages import SegmentEvent
from worker.synthesis_cache import SynthesisCache


class SessionPlayback:
    """Started when the session goes active, closed by its teardown's first step."""

    def __init__(
        self,
        fmt: MediaFormat,
        send: Callable[[bytes], None],
        rtp: bool,
        syntheses: Sequence[Synthesis],
        pacer: Pacer,
        metrics: Registry,
        post: Callable[[SegmentEvent], None],
        cache: SynthesisCache | None = None,
        chunk_frames: int = 1,
        on_clear: Callable[[], None] | None = None,
    ) -> None:
        self._pacer = pacer
        self._metrics = metrics
        self._post = post
        self._said: dict[str, float] = {}  # segment id -> when its say was applied
        self._speaker: dict[str, tuple[str, float]] = {}  # segment id -> provider, first byte
        self.playout = Playout(
            fmt,
            send,
            self._on_playout,
            time.monotonic,
            rtp=rtp,
            chunk_frames=chunk_frames,
            on_clear=on_clear,
        )
        self.player = Player(syntheses, self.playout, self._on_problem, self, cache)
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

    # -- what the player reports (SynthesisObserver) ------------------------------------

    def speaking(self, segment_id: str, provider: str, first_byte_s: float) -> None:
        self._speaker[segment_id] = (provider, first_byte_s)
        self._metrics.observe(
            "speaking_provider_first_byte_seconds", first_byte_s, provider=provider
        )

    def synthesized(self, provider: str, characters: int) -> None:
        self._metrics.inc("speaking_provider_characters_total", characters, provider=provider)

    def failed(self, provider: str, kind: FailureKind) -> None:
        self._metrics.inc("speaking_provider_failures_total", provider=provider, kind=kind.value)

    # -- what the playout reports (from the tick) ------------------------------------------

    def _on_playout(self, event: PlayoutEvent) -> None:
        segment_id = event.segment_id
        if event.kind is PlayoutEventKind.SEGMENT_STARTED:
            self.player.notify_started(segment_id)
            latency = event.at - self._said.pop(segment_id, event.at)
            provider, first_byte = self._speaker.pop(segment_id, ("", 0.0))
            self._metrics.observe("speaking_first_audio_seconds", latency)
            data = {"latency_ms": f"{latency * 1000:.1f}", "provider": provider}
            if provider:
                # The worker's own share of the latency: all but the provider's first byte.
                overhead = max(0.0, latency - first_byte)
                self._metrics.observe(
                    "speaking_worker_overhead_seconds", overhead, provider=provider
                )
                data["first_byte_ms"] = f"{first_byte * 1000:.1f}"
            self._post(SegmentEvent(EventType.SEGMENT_STARTED, segment_id, data))
        else:
            self.player.notify_finished(segment_id)
            self._post(SegmentEvent(EventType.SEGMENT_FINISHED, segment_id))

    def _on_problem(self, problem: SegmentProblem) -> None:
        kind = EventType.SEGMENT_FAILED if problem.failed else EventType.SEGMENT_FLUSHED
        self._said.pop(problem.segment_id, None)
        self._speaker.pop(problem.segment_id, None)
        self._post(SegmentEvent(kind, problem.segment_id, {"reason": problem.reason}))


def describe_playback_metrics(metrics: Registry) -> None:
    """The metrics a session's playback records (the worker describes them once)."""
    buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    metrics.describe(
        "speaking_first_audio_seconds", "histogram", "Say to first frame sent", buckets
    )
    metrics.describe(
        "speaking_provider_first_byte_seconds",
        "histogram",
        "Provider's time to first audio",
        buckets,
    )
    metrics.describe(
        "speaking_worker_overhead_seconds",
        "histogram",
        "Say to first frame sent, minus the provider's time to first audio",
        buckets,
    )
    metrics.describe(
        "speaking_provider_failures_total", "counter", "Provider failures, by provider and kind"
    )
    metrics.describe(
        "speaking_provider_characters_total",
        "counter",
        "Characters synthesized (billed), by provider",
    )
    metrics.describe("speaking_frames_sent_total", "counter", "20 ms frames sent by ended sessions")
