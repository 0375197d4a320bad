"""The player with several providers and a cache (no network): a provider that fails
before any audio of a segment was sent is replaced by the next one; once audio was sent
nothing is retried; identical pieces come from the cache; the observer hears it all."""

from __future__ import annotations

import time

import numpy as np

from tests.unit.test_playback import (
    FINISHED,
    STARTED,
    FakeEngine,
    RecordingObserver,
    expected_audio,
    pump,
    pump_until,
    sent_audio,
)
from worker.engines.base import FailureKind
from worker.media_format import MediaFormat
from worker.metrics import Registry
from worker.player import Player, Segment, SegmentProblem
from worker.playout import Playout, PlayoutEvent
from worker.synthesis_cache import SynthesisCache

FMT = MediaFormat.SLIN16


def assert_same_audio(heard: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to the resampler's chunking (at most 4 LSB, as tests/unit/test_playback.py)."""
    assert heard.shape == expected.shape
    worst = int(np.max(np.abs(heard.astype(np.int32) - expected.astype(np.int32))))
    assert worst <= 4, f"audio differs by {worst} LSB"


class Rig:
    def __init__(self, *engines: FakeEngine, cache: SynthesisCache | None = None) -> None:
        self.packets: list[bytes] = []
        self.events: list[PlayoutEvent] = []
        self.problems: list[SegmentProblem] = []
        self.observer = RecordingObserver()
        self.playout = Playout(FMT, self.packets.append, self._event, time.monotonic)
        self.player = Player(
            list(engines), self.playout, self.problems.append, self.observer, cache
        )

    def _event(self, event: PlayoutEvent) -> None:
        self.events.append(event)
        if event.kind is STARTED:
            self.player.notify_started(event.segment_id)
        if event.kind is FINISHED:
            self.player.notify_finished(event.segment_id)

    async def play_out(self, max_ticks: int = 2000) -> None:
        for _ in range(max_ticks):
            await pump(30)
            if self.player.pending == 0 and len(self.playout) == 0:
                return
            self.playout.tick()
        raise AssertionError("did not finish playing")


async def test_a_provider_failing_before_any_audio_is_replaced_by_the_next() -> None:
    primary = FakeEngine(fail_first="Hello", provider="elevenlabs")
    fallback = FakeEngine(provider="gcp")
    rig = Rig(primary, fallback)
    rig.player.start()
    rig.player.enqueue(Segment("s1", "Hello there. How are you."))
    await pump_until(lambda: len(rig.playout) > 0)
    await rig.play_out()
    await rig.player.close()
    assert rig.problems == []
    assert rig.observer.failures == [("elevenlabs", FailureKind.RATE_LIMIT)]
    assert rig.observer.spoken == [("s1", "gcp")]
    # The fallback's audio, whole, from the segment's start: nothing of the primary.
    heard = sent_audio(list(rig.packets))
    assert_same_audio(heard, expected_audio("Hello there. How are you.", FMT))


async def test_once_audio_was_sent_a_failure_ends_the_segment_without_a_retry() -> None:
    # The first sentence plays, the second fails half-way: the fallback must not start
    # the segment again (it would repeat what was heard).
    primary = FakeEngine(fail_on="second", provider="elevenlabs")
    fallback = FakeEngine(provider="gcp")
    rig = Rig(primary, fallback)
    primary.playout = rig.playout
    rig.player.start()
    rig.player.enqueue(Segment("s1", "A first sentence of speech. And a second one here."))
    await pump_until(lambda: len(rig.playout) > 0)
    await rig.play_out()
    await rig.player.close()
    assert [p.segment_id for p in rig.problems if p.failed] == ["s1"]
    assert "provider refused" in rig.problems[0].reason
    assert fallback.started == []  # never asked


async def test_every_provider_failing_fails_the_segment_naming_each() -> None:
    rig = Rig(
        FakeEngine(fail_first="Hi", provider="elevenlabs"),
        FakeEngine(fail_first="Hi", provider="aws"),
    )
    rig.player.start()
    rig.player.enqueue(Segment("s1", "Hi."))
    await pump_until(lambda: bool(rig.problems))
    await rig.player.close()
    (problem,) = rig.problems
    assert (
        problem.failed
        and "elevenlabs: HTTP 429" in problem.reason
        and "aws: HTTP 429" in problem.reason
    )
    assert rig.packets == [] or all(not p for p in rig.packets)


async def test_an_identical_segment_is_played_from_the_cache() -> None:
    metrics = Registry()
    cache = SynthesisCache(metrics)
    engine = FakeEngine(provider="elevenlabs")
    rig = Rig(engine, cache=cache)
    rig.player.start()
    for sid in ("s1", "s2"):
        rig.player.enqueue(Segment(sid, "Same words again."))
    await pump_until(lambda: len(rig.playout) > 0)
    await rig.play_out()
    await rig.player.close()
    assert engine.started == ["Same words again."]  # synthesized once
    rendered = metrics.render()
    assert 'speaking_tts_cache_total{provider="elevenlabs",result="hit"} 1' in rendered
    assert 'speaking_tts_cache_total{provider="elevenlabs",result="miss"} 1' in rendered
    one = expected_audio("Same words again.", FMT)
    assert_same_audio(sent_audio(list(rig.packets)), np.concatenate([one, one]))
    assert rig.observer.characters == {"elevenlabs": len("Same words again.")}


async def test_a_flushed_piece_is_never_cached() -> None:
    cache = SynthesisCache(Registry())
    engine = FakeEngine(provider="elevenlabs")
    rig = Rig(engine, cache=cache)
    rig.player.start()
    rig.player.enqueue(Segment("s1", " ".join(["word"] * 400) + "."))
    await pump_until(lambda: len(rig.playout) > 0)
    await rig.player.flush()
    await rig.player.close()
    assert cache.size_bytes == 0
