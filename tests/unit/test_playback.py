"""Playback: the shared clock (Pacer), a session's frame buffer (Playout) and the Player.

The Pacer is run for real on the event loop for a few hundred milliseconds. Playout and
Player are driven by hand: the test calls ``playout.tick()`` itself (one call = one 20 ms
clock tick) and lets the synthesis task run by yielding to the loop, so no real clock is
needed and the results do not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from worker.engines.base import EngineError, FailureKind, Voice
from worker.g711 import ulaw_encode
from worker.media_format import MediaFormat
from worker.pacer import Pacer
from worker.player import Player, Segment, SegmentProblem
from worker.playout import Frame, Playout, PlayoutEvent, PlayoutEventKind
from worker.resample import SegmentResampler
from worker.segmentation import split_sentences

Samples = npt.NDArray[np.int16]
STARTED = PlayoutEventKind.SEGMENT_STARTED
FINISHED = PlayoutEventKind.SEGMENT_FINISHED


async def pump(times: int = 50) -> None:
    """Let every ready task run ``times`` loop iterations."""
    for _ in range(times):
        await asyncio.sleep(0)


async def pump_until(condition: Callable[[], bool], limit: int = 20_000) -> None:
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


# -- Pacer: one real clock for every stream ----------------------------------------------
# Proves: all registered streams tick together the same number of times at the period's
# rate; a removed stream stops; a stream whose tick raises is removed and the others go
# on; with no stream the clock sleeps (no ticks, no CPU) and a new stream restarts it on a
# fresh schedule (no catch-up burst for the idle time).

PERIOD = 0.01


class CountingStream:
    def __init__(self, fail_at: int | None = None) -> None:
        self.ticks = 0
        self.fail_at = fail_at

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks == self.fail_at:
            raise RuntimeError("tick failed")


async def ticked(stream: CountingStream, count: int, within_s: float = 5.0) -> None:
    """Until ``stream`` has ticked ``count`` times on the real clock (a busy machine may
    delay ticks; a fixed sleep would then see too few)."""
    async with asyncio.timeout(within_s):
        while stream.ticks < count:  # noqa: ASYNC110
            await asyncio.sleep(PERIOD)


def expected_ticks(elapsed: float) -> int:
    return int(elapsed / PERIOD) + 1


async def test_pacer_ticks_streams_in_lockstep_and_stops_removed_ones() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(period=PERIOD)
    pacer.start()
    try:
        await pump()
        a, b, c = CountingStream(), CountingStream(), CountingStream()
        started = loop.time()
        for stream in (a, b, c):
            pacer.add(stream)
        await asyncio.sleep(0.2)
        elapsed = loop.time() - started
        assert a.ticks == b.ticks == c.ticks
        assert abs(a.ticks - expected_ticks(elapsed)) <= 2, (a.ticks, elapsed)
        assert pacer.ticks == a.ticks

        pacer.remove(b)
        frozen, a_before = b.ticks, a.ticks
        await ticked(a, a_before + 7)
        assert b.ticks == frozen
        assert a.ticks == c.ticks >= a_before + 7
        assert pacer.stream_count == 2
        assert pacer.schedule is not None and pacer.schedule.resyncs == 0
    finally:
        await pacer.stop()


async def test_pacer_removes_a_stream_whose_tick_raises(caplog: pytest.LogCaptureFixture) -> None:
    pacer = Pacer(period=PERIOD)
    pacer.start()
    try:
        await pump()
        good, bad, other = CountingStream(), CountingStream(fail_at=3), CountingStream()
        with caplog.at_level(logging.ERROR, logger="worker.pacer"):
            for stream in (good, bad, other):
                pacer.add(stream)
            await ticked(good, 10)
        assert bad.ticks == 3
        assert pacer.stream_count == 2
        assert good.ticks == other.ticks >= 10
        assert any("tick failed" in r.getMessage() or r.exc_info for r in caplog.records)
    finally:
        await pacer.stop()


async def test_pacer_sleeps_without_streams_and_restarts_on_a_fresh_schedule() -> None:
    pacer = Pacer(period=PERIOD)
    pacer.start()
    try:
        await pump()
        assert pacer.ticks == 0  # nothing registered yet: no ticks at all
        first = CountingStream()
        pacer.add(first)
        await asyncio.sleep(0.05)
        assert first.ticks > 0
        old_schedule = pacer.schedule
        pacer.remove(first)
        await asyncio.sleep(0.02)  # let the loop notice it is idle
        idle_ticks = pacer.ticks
        cpu = time.process_time()
        await asyncio.sleep(0.15)
        cpu = time.process_time() - cpu
        assert pacer.ticks == idle_ticks
        assert cpu < 0.05, f"idle pacer used {cpu:.3f} s of CPU in 0.15 s"

        loop = asyncio.get_running_loop()
        second = CountingStream()
        started = loop.time()
        pacer.add(second)
        await asyncio.sleep(0.1)
        elapsed = loop.time() - started
        assert pacer.schedule is not old_schedule
        assert pacer.schedule is not None and pacer.schedule.resyncs == 0
        # No burst for the idle time: ticks match the time since the restart only.
        assert abs(second.ticks - expected_ticks(elapsed)) <= 2, (second.ticks, elapsed)
        assert pacer.ticks == idle_ticks + second.ticks
    finally:
        await pacer.stop()


async def test_pacer_stream_added_before_start_is_ticked() -> None:
    pacer = Pacer(period=PERIOD)
    stream = CountingStream()
    pacer.add(stream)
    pacer.start()
    try:
        await asyncio.sleep(0.05)
        assert stream.ticks > 0
    finally:
        await pacer.stop()


# -- Playout: the frame buffer drained by the clock --------------------------------------
# Proves: one tick sends exactly one frame, in order, as one RTP packet; an empty tick
# sends nothing (and the next packet is a new talkspurt); started/finished events fire on
# the frames flagged first/last, when they are sent; clear() and discard() take effect
# before the next tick; wait_for_space applies back-pressure at max_ahead_frames.


class PlayoutRig:
    """A Playout on a fake clock, recording the packets it sends and its events."""

    def __init__(self, fmt: MediaFormat = MediaFormat.SLIN16, max_ahead: int = 150) -> None:
        self.packets: list[bytes] = []
        self.events: list[PlayoutEvent] = []
        self.now = 0.0
        # Tick by tick: these tests are about the clock's own schedule (prompt start,
        # sending the first frame of an idle stream at once, is tested on its own).
        self.playout = Playout(
            fmt,
            self.packets.append,
            self.events.append,
            self.clock,
            max_ahead_frames=max_ahead,
            prompt_start=False,
        )

    def clock(self) -> float:
        return self.now

    def tick(self) -> bytes | None:
        """One clock tick; returns the packet sent, if any."""
        self.now += 0.02
        before = len(self.packets)
        self.playout.tick()
        assert len(self.packets) - before in (0, 1), "a tick sends at most one packet"
        return self.packets[-1] if len(self.packets) > before else None


def frames_of(
    segment_id: str, values: list[int], fmt: MediaFormat = MediaFormat.SLIN16
) -> list[Frame]:
    """One frame per value, each filled with that value; first/last flagged."""
    n = fmt.samples_per_frame
    return [
        Frame(np.full(n, v, dtype=np.int16), segment_id, first=i == 0, last=i == len(values) - 1)
        for i, v in enumerate(values)
    ]


def slin_value(packet: bytes) -> int:
    """The (constant) sample value of a slin16 test packet."""
    samples = np.frombuffer(packet[12:], dtype=">i2")
    assert samples.size == 320 and np.all(samples == samples[0])
    return int(samples[0])


def marker(packet: bytes) -> bool:
    return bool(packet[1] & 0x80)


def test_playout_sends_one_frame_per_tick_in_order_with_events() -> None:
    rig = PlayoutRig()
    rig.playout.push(frames_of("a", [1, 2, 3]))
    rig.playout.push(frames_of("b", [4, 5]))
    sent = [rig.tick() for _ in range(7)]
    assert [slin_value(p) for p in sent[:5] if p] == [1, 2, 3, 4, 5]
    assert sent[5] is None and sent[6] is None
    assert rig.playout.frames_sent == 5 and len(rig.playout) == 0
    got = [(e.kind, e.segment_id, round(e.at, 2)) for e in rig.events]
    assert got == [
        (STARTED, "a", 0.02),
        (FINISHED, "a", 0.06),
        (STARTED, "b", 0.08),
        (FINISHED, "b", 0.1),
    ]
    assert [marker(p) for p in rig.packets] == [True, False, False, False, False]


def test_playout_empty_tick_sends_nothing_and_keeps_the_media_clock() -> None:
    rig = PlayoutRig(MediaFormat.ULAW)
    assert rig.tick() is None and rig.events == []
    frame = np.arange(160, dtype=np.int16) * 100
    rig.playout.push([Frame(frame, "a", first=True, last=False)])
    rig.playout.push([Frame(frame, "a", first=False, last=False)])
    first = rig.tick()
    assert rig.tick() is not None
    assert rig.tick() is None  # underrun
    rig.playout.push([Frame(frame, "a", first=False, last=True)])
    third = rig.tick()
    assert first is not None and third is not None
    assert first[12:] == ulaw_encode(frame) and len(first) == 12 + 160
    assert first[1] & 0x7F == 0
    assert marker(first) and marker(third)  # a new talkspurt after the silent tick
    ts = [struct.unpack("!I", p[4:8])[0] for p in rig.packets]
    assert [(b - a) % 2**32 for a, b in itertools.pairwise(ts)] == [160, 2 * 160]


def test_playout_clear_stops_the_very_next_tick() -> None:
    rig = PlayoutRig()
    rig.playout.push(frames_of("a", [1, 2, 3, 4]))
    assert rig.tick() is not None
    rig.playout.clear()
    assert len(rig.playout) == 0
    assert rig.tick() is None
    assert [e.kind for e in rig.events] == [STARTED]


def test_playout_discard_removes_only_that_segment() -> None:
    rig = PlayoutRig()
    rig.playout.push(frames_of("a", [1, 2]))
    rig.playout.push(frames_of("b", [3, 4, 5]))
    rig.playout.push(frames_of("c", [6]))
    rig.playout.discard("b")
    assert len(rig.playout) == 3
    values = [slin_value(p) for _ in range(4) if (p := rig.tick())]
    assert values == [1, 2, 6]
    assert [(e.kind, e.segment_id) for e in rig.events] == [
        (STARTED, "a"),
        (FINISHED, "a"),
        (STARTED, "c"),
        (FINISHED, "c"),
    ]


async def test_playout_back_pressure() -> None:
    rig = PlayoutRig(max_ahead=4)
    await asyncio.wait_for(rig.playout.wait_for_space(), 1)  # empty: room at once
    rig.playout.push(frames_of("a", [1, 2, 3]))
    await asyncio.wait_for(rig.playout.wait_for_space(), 1)  # 3 < 4
    rig.playout.push(frames_of("b", [4, 5]))  # 5 queued >= 4
    waiter = asyncio.ensure_future(rig.playout.wait_for_space())
    await pump()
    assert not waiter.done()
    rig.tick()  # 4 left: still full
    await pump()
    assert not waiter.done()
    rig.tick()  # 3 left: room
    await pump()
    assert waiter.done()

    rig.playout.push(frames_of("c", [6, 7, 8]))
    waiter = asyncio.ensure_future(rig.playout.wait_for_space())
    await pump()
    assert not waiter.done()
    rig.playout.discard("c")
    await pump()
    assert waiter.done()

    rig.playout.push(frames_of("d", [9, 10, 11, 12]))
    waiter = asyncio.ensure_future(rig.playout.wait_for_space())
    await pump()
    assert not waiter.done()
    rig.playout.clear()
    await pump()
    assert waiter.done()


# -- Player: segments -> sentences -> engine -> resample -> frames -> Playout ------------
# Proves: segments play in order and back to back; the audio sent is exactly the engine's
# audio resampled as one stream per segment; the first frame is queued while later
# sentences are still being synthesized; flush silences the very next tick, reports every
# dropped segment, closes the engine's stream before returning, and the player keeps
# working after; a failing engine fails only its segment; close() reports what is left.

ENGINE_RATE = 22_050
SAMPLES_PER_WORD = 2_205  # 100 ms per word
CHUNK_BYTES = [1, 7, 333, 1001, 4095, 2, 999]  # odd sizes, split mid-sample


class RecordingStream(AsyncIterator[bytes]):
    """The engine's async iterator, recording when the player closes it."""

    def __init__(self, engine: FakeEngine, text: str, gen: AsyncGenerator[bytes, None]) -> None:
        self._engine = engine
        self._text = text
        self._gen = gen

    async def __anext__(self) -> bytes:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        self._engine.aclosed.append(self._text)
        await self._gen.aclose()


class FakeEngine:
    """A deterministic synthesis: a 22,050 Hz tone, 100 ms per word, in odd-sized chunks,
    one sentence per request.

    ``gates`` makes a sentence containing the key wait for the event before its first
    chunk (a slow or stuck provider); ``fail_on`` makes a sentence containing it raise
    EngineError after half its audio.
    """

    provider = "fake"
    voice = Voice("fake", "en")
    rate = ENGINE_RATE

    def __init__(
        self,
        playout: Playout | None = None,
        gates: dict[str, asyncio.Event] | None = None,
        fail_on: str | None = None,
        fail_first: str | None = None,
        provider: str = "fake",
    ) -> None:
        self.provider = provider
        self.fail_first = fail_first
        self.playout = playout
        self.gates = gates or {}
        self.fail_on = fail_on
        self.started: list[str] = []
        self.frames_queued_at_start: dict[str, int] = {}
        self.produced: dict[str, bytes] = {}
        self.aclosed: list[str] = []
        self.finalized: list[str] = []

    def split(self, text: str) -> list[str]:
        return split_sentences(text)

    async def prepare(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stream(self, text: str) -> AsyncIterator[bytes]:
        return RecordingStream(self, text, self._generate(text))

    @staticmethod
    def audio_for(text: str) -> bytes:
        n = SAMPLES_PER_WORD * len(text.split())
        t = np.arange(n) / ENGINE_RATE
        freq = 200 + 10 * (sum(map(ord, text)) % 40)
        return np.round(np.sin(2 * np.pi * freq * t) * 9000).astype("<i2").tobytes()

    async def _generate(self, text: str) -> AsyncGenerator[bytes, None]:
        self.started.append(text)
        if self.playout is not None:
            self.frames_queued_at_start[text] = self.playout.frames_sent + len(self.playout)
        try:
            for key, gate in self.gates.items():
                if key in text:
                    await gate.wait()
            if self.fail_first and self.fail_first in text:
                raise EngineError(
                    f"{self.provider}: HTTP 429 (rate limited)", FailureKind.RATE_LIMIT
                )
            data = self.audio_for(text)
            self.produced[text] = data
            pos, i = 0, 0
            while pos < len(data):
                if self.fail_on and self.fail_on in text and pos >= len(data) // 2:
                    raise EngineError(f"provider refused {text!r}")
                size = CHUNK_BYTES[i % len(CHUNK_BYTES)]
                yield data[pos : pos + size]
                pos, i = pos + size, i + 1
                await asyncio.sleep(0)
        finally:
            self.finalized.append(text)


class RecordingObserver:
    """Collects what the player reports about its providers."""

    def __init__(self) -> None:
        self.spoken: list[tuple[str, str]] = []  # segment id, provider
        self.failures: list[tuple[str, FailureKind]] = []
        self.characters: dict[str, int] = {}

    def speaking(self, segment_id: str, provider: str, first_byte_s: float) -> None:
        self.spoken.append((segment_id, provider))

    def synthesized(self, provider: str, characters: int) -> None:
        self.characters[provider] = self.characters.get(provider, 0) + characters

    def failed(self, provider: str, kind: FailureKind) -> None:
        self.failures.append((provider, kind))


def expected_audio(text: str, fmt: MediaFormat) -> Samples:
    """The segment's audio as one resampled stream, padded to whole frames."""
    pcm = b"".join(FakeEngine.audio_for(s) for s in split_sentences(text))
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
    r = SegmentResampler(ENGINE_RATE, fmt.rate)
    y = np.concatenate([r.feed(x), r.finish()])
    frames = max(1, math.ceil(y.size / fmt.samples_per_frame))
    out = np.zeros(frames * fmt.samples_per_frame, dtype=np.int16)
    out[: y.size] = y
    return out


@dataclass
class PlayerRig:
    engine: FakeEngine
    playout: Playout
    player: Player
    packets: list[bytes]
    events: list[PlayoutEvent]
    problems: list[SegmentProblem]
    # Per tick: the packet sent (or None) and the events of that tick.
    log: list[tuple[bytes | None, list[PlayoutEvent]]] = field(default_factory=list)

    def tick(self) -> bytes | None:
        before_p, before_e = len(self.packets), len(self.events)
        self.playout.tick()
        packet = self.packets[-1] if len(self.packets) > before_p else None
        self.log.append((packet, self.events[before_e:]))
        return packet

    def tick_index(self, kind: PlayoutEventKind, segment_id: str) -> int:
        for i, (_, events) in enumerate(self.log):
            if any(e.kind is kind and e.segment_id == segment_id for e in events):
                return i
        raise AssertionError(f"no {kind.value} for {segment_id}")

    def segment_ids_seen(self) -> set[str]:
        return {e.segment_id for _, events in self.log for e in events}

    async def play_out(self, max_ticks: int = 1000) -> None:
        """Tick (letting synthesis run between ticks) until nothing is left to play."""
        for _ in range(max_ticks):
            await pump(30)
            if self.player.pending == 0 and len(self.playout) == 0:
                return
            self.tick()
        raise AssertionError("did not finish playing")


def player_rig(
    fmt: MediaFormat = MediaFormat.SLIN16,
    max_ahead: int = 150,
    gates: dict[str, asyncio.Event] | None = None,
    fail_on: str | None = None,
) -> PlayerRig:
    events: list[PlayoutEvent] = []
    packets: list[bytes] = []
    problems: list[SegmentProblem] = []
    holder: list[Player] = []

    def on_event(event: PlayoutEvent) -> None:
        events.append(event)
        if event.kind is FINISHED:
            holder[0].notify_finished(event.segment_id)

    playout = Playout(
        fmt,
        packets.append,
        on_event,
        time.monotonic,
        max_ahead_frames=max_ahead,
        prompt_start=False,
    )
    engine = FakeEngine(playout, gates, fail_on)
    player = Player([engine], playout, problems.append, RecordingObserver())
    holder.append(player)
    return PlayerRig(engine, playout, player, packets, events, problems)


def sent_audio(packets: list[bytes | None]) -> Samples:
    parts = [np.frombuffer(p[12:], dtype=">i2") for p in packets if p]
    return np.concatenate(parts).astype(np.int16)


async def test_player_plays_segments_in_order_back_to_back_with_exact_audio() -> None:
    rig = player_rig()
    texts = {"s1": "One two three four. Five six.", "s2": "Seven eight nine. Ten."}
    rig.player.start()
    for sid, text in texts.items():
        rig.player.enqueue(Segment(sid, text))
    await pump_until(lambda: len(rig.playout) > 0)
    await rig.play_out()
    await rig.player.close()

    s1_start, s1_end = rig.tick_index(STARTED, "s1"), rig.tick_index(FINISHED, "s1")
    s2_start, s2_end = rig.tick_index(STARTED, "s2"), rig.tick_index(FINISHED, "s2")
    assert s1_start == 0
    assert s2_start == s1_end + 1, "segment 2 must follow segment 1 with no gap tick"
    assert all(packet is not None for packet, _ in rig.log[: s2_end + 1])
    assert all(packet is None for packet, _ in rig.log[s2_end + 1 :])
    assert [marker(p) for p in rig.packets].count(True) == 1  # one continuous talkspurt
    for sid, (a, b) in {"s1": (s1_start, s1_end), "s2": (s2_start, s2_end)}.items():
        expected = expected_audio(texts[sid], MediaFormat.SLIN16)
        got = sent_audio([p for p, _ in rig.log[a : b + 1]])
        assert got.size == expected.size, f"{sid}: {got.size} samples, expected {expected.size}"
        worst = int(np.abs(got.astype(np.int32) - expected).max())
        assert worst <= 4, f"{sid}: audio differs by {worst} LSB"
    assert rig.problems == []
    assert rig.engine.started == [s for t in texts.values() for s in split_sentences(t)]


async def test_player_ulaw_frame_count_matches_resampled_length() -> None:
    rig = player_rig(MediaFormat.ULAW)
    text = "A b c. D e f g h i. J."
    rig.player.start()
    rig.player.enqueue(Segment("u", text))
    await rig.play_out()
    await rig.player.close()
    expected = expected_audio(text, MediaFormat.ULAW)
    assert rig.playout.frames_sent == expected.size // 160
    assert all(len(p) == 12 + 160 for p in rig.packets)


async def test_player_queues_first_frame_before_later_sentences_are_synthesized() -> None:
    gate = asyncio.Event()
    rig = player_rig(gates={"Delta": gate})
    rig.player.start()
    rig.player.enqueue(Segment("s1", "Alpha beta gamma. Delta epsilon. Zeta."))
    await pump_until(lambda: "Delta epsilon." in rig.engine.started)
    await pump()
    assert rig.engine.frames_queued_at_start["Alpha beta gamma."] == 0
    assert rig.engine.frames_queued_at_start["Delta epsilon."] > 0
    # The first sentence's audio is playing while the second is still being synthesized.
    assert rig.tick() is not None
    assert [(e.kind, e.segment_id) for e in rig.events] == [(STARTED, "s1")]
    assert "Delta epsilon." not in rig.engine.finalized
    assert "Zeta." not in rig.engine.started
    gate.set()
    await rig.play_out()
    await rig.player.close()
    assert rig.tick_index(FINISHED, "s1") > 0
    expected = expected_audio("Alpha beta gamma. Delta epsilon. Zeta.", MediaFormat.SLIN16)
    assert rig.playout.frames_sent == expected.size // 320


async def test_flush_while_the_engine_is_stuck() -> None:
    stuck = asyncio.Event()  # never set: the provider hangs mid-segment
    rig = player_rig(gates={"stuck": stuck})
    rig.player.start()
    rig.player.enqueue(Segment("s1", "Hello there friend. This one is stuck."))
    rig.player.enqueue(Segment("s2", "Queued two."))
    rig.player.enqueue(Segment("s3", "Queued three."))
    await pump_until(lambda: "This one is stuck." in rig.engine.started)
    for _ in range(3):
        assert rig.tick() is not None

    flushed = await asyncio.wait_for(rig.player.flush(), 1)

    # Checked before the loop runs anything else: all of this is done when flush returns.
    assert flushed == ["s1", "s2", "s3"]
    assert rig.problems == [SegmentProblem(s, failed=False, reason="flush") for s in flushed]
    assert "This one is stuck." in rig.engine.aclosed
    assert "This one is stuck." in rig.engine.finalized
    assert len(rig.playout) == 0
    assert rig.tick() is None, "the very next tick after a flush must send nothing"
    assert rig.player.pending == 0

    rig.player.enqueue(Segment("s4", "After the flush."))
    await rig.play_out()
    await rig.player.close()
    assert rig.segment_ids_seen() == {"s1", "s4"}
    assert rig.tick_index(STARTED, "s4") > rig.tick_index(STARTED, "s1")
    s4_frames = rig.tick_index(FINISHED, "s4") - rig.tick_index(STARTED, "s4") + 1
    assert s4_frames == expected_audio("After the flush.", MediaFormat.SLIN16).size // 320
    assert not any(s.startswith("Queued") for s in rig.engine.started)
    assert len(rig.problems) == 3


async def test_flush_while_back_pressure_holds_the_engine_at_a_yield() -> None:
    rig = player_rig(max_ahead=5)
    rig.player.start()
    rig.player.enqueue(Segment("long", "One two three four five six seven eight nine ten."))
    await pump(500)
    # The player waits for room; the engine's generator is suspended mid-sentence.
    assert 5 <= len(rig.playout) < 20
    assert rig.engine.started and not rig.engine.finalized

    flushed = await asyncio.wait_for(rig.player.flush(), 1)
    assert flushed == ["long"]
    assert rig.engine.aclosed == rig.engine.started
    assert rig.engine.finalized == rig.engine.started, "the engine's work must stop at once"
    assert rig.tick() is None
    rig.player.enqueue(Segment("next", "Short one."))
    await rig.play_out()
    await rig.player.close()
    assert rig.segment_ids_seen() == {"next"}


async def test_flush_when_idle_drops_nothing_and_player_keeps_working() -> None:
    rig = player_rig()
    rig.player.start()
    await pump()
    assert await rig.player.flush() == []
    assert rig.problems == []
    rig.player.enqueue(Segment("s1", "Still here."))
    await rig.play_out()
    await rig.player.close()
    assert rig.segment_ids_seen() == {"s1"}


async def test_engine_error_fails_only_its_segment() -> None:
    rig = player_rig(fail_on="broken")
    rig.player.start()
    rig.player.enqueue(Segment("bad", "This starts fine. Then it is broken. Never reached."))
    rig.player.enqueue(Segment("good", "Next segment plays."))
    await pump_until(lambda: len(rig.problems) > 0)
    await rig.play_out()
    await rig.player.close()

    (problem,) = rig.problems
    assert problem.segment_id == "bad" and problem.failed
    assert "provider refused" in problem.reason
    assert "Never reached." not in rig.engine.started
    assert "Then it is broken." in rig.engine.aclosed
    # Nothing of the failed segment is sent: its queued frames were discarded.
    assert rig.segment_ids_seen() == {"good"}
    assert rig.tick_index(STARTED, "good") == 0
    expected = expected_audio("Next segment plays.", MediaFormat.SLIN16)
    assert rig.playout.frames_sent == expected.size // 320


async def test_engine_error_mid_playback_discards_the_rest_and_moves_on() -> None:
    gate = asyncio.Event()
    rig = player_rig(gates={"broken": gate}, fail_on="broken")
    rig.player.start()
    rig.player.enqueue(Segment("bad", "First sentence is long enough. Then it is broken."))
    rig.player.enqueue(Segment("good", "Next one."))
    await pump_until(lambda: "Then it is broken." in rig.engine.started)
    assert rig.tick() is not None and rig.tick() is not None
    gate.set()
    await pump_until(lambda: len(rig.problems) > 0)
    await pump_until(lambda: len(rig.playout) > 0)
    rig.tick()
    assert rig.log[-1][1][0].kind is STARTED and rig.log[-1][1][0].segment_id == "good"
    await rig.play_out()
    await rig.player.close()
    assert [p.segment_id for p in rig.problems] == ["bad"] and rig.problems[0].failed
    with pytest.raises(AssertionError):
        rig.tick_index(FINISHED, "bad")
    assert rig.tick_index(FINISHED, "good") > rig.tick_index(STARTED, "good")


async def test_close_reports_unfinished_segments_with_the_reason() -> None:
    gate = asyncio.Event()
    rig = player_rig(gates={"slow": gate})
    rig.player.start()
    rig.player.enqueue(Segment("done", "Plays to the end."))
    rig.player.enqueue(Segment("playing", "Starts now. Then a slow part."))
    rig.player.enqueue(Segment("queued", "Never started."))
    await pump_until(lambda: "Then a slow part." in rig.engine.started)
    while rig.tick() is not None:
        await pump()
    rig.tick_index(FINISHED, "done")
    rig.tick_index(STARTED, "playing")

    dropped = await asyncio.wait_for(rig.player.close("hangup"), 1)
    assert dropped == ["playing", "queued"]
    assert rig.problems == [
        SegmentProblem("playing", failed=False, reason="hangup"),
        SegmentProblem("queued", failed=False, reason="hangup"),
    ]
    assert "Then a slow part." in rig.engine.aclosed
    assert rig.tick() is None
    assert rig.player.pending == 0
    gate.set()
    await pump()
    assert len(rig.playout) == 0, "a closed player pushes nothing more"


def test_the_first_frame_into_an_idle_stream_leaves_at_once_then_the_clock_paces() -> None:
    rig = PlayoutRig()
    rig.playout = Playout(
        MediaFormat.SLIN16, rig.packets.append, rig.events.append, rig.clock, prompt_start=True
    )
    assert rig.tick() is None  # idle
    rig.playout.push(frames_of("a", [1, 2, 3]))
    assert len(rig.packets) == 1  # sent on push, not at the next tick
    assert [e.kind for e in rig.events] == [STARTED]
    assert rig.tick() is not None and rig.tick() is not None and rig.tick() is None
    assert len(rig.packets) == 3  # then one per tick, never two in one tick
    rig.playout.push(frames_of("b", [4, 5]))  # idle again: again at once
    assert len(rig.packets) == 4
    rig.playout.push(frames_of("c", [6]))  # not idle now: waits for the clock
    assert len(rig.packets) == 4
    assert [slin_value(p) for p in rig.packets] == [1, 2, 3, 4]  # in order, each once


def test_chunked_playout_stays_one_to_two_chunks_ahead_and_flushes_the_transport() -> None:
    """chan_websocket paces by itself: frames go in messages, starting two chunks ahead,
    then topped up to two chunks each time the transport's lead (it plays one frame per
    tick) falls below one; a clear also empties the transport (FLUSH_MEDIA)."""
    messages: list[bytes] = []
    cleared: list[bool] = []
    events: list[PlayoutEvent] = []
    playout = Playout(
        MediaFormat.ULAW,
        messages.append,
        events.append,
        lambda: 0.0,
        rtp=False,
        chunk_frames=5,
        on_clear=lambda: cleared.append(True),
    )
    frames = frames_of("a", list(range(1, 31)), MediaFormat.ULAW)
    playout.push(frames)
    assert [len(m) for m in messages] == [10 * 160]  # at once: two chunks ahead
    for _ in range(5):
        playout.tick()
    assert [len(m) for m in messages] == [1600]  # still a chunk ahead: nothing yet
    playout.tick()
    assert [len(m) for m in messages] == [1600, 960]  # lead 4 < 5: topped up to 10
    for _ in range(6):
        playout.tick()
    assert len(messages) == 3 and playout.frames_sent == 22
    assert b"".join(messages) == b"".join(ulaw_encode(f.samples) for f in frames[:22])
    assert [e.kind for e in events] == [STARTED]
    playout.clear()
    assert cleared == [True] and len(playout) == 0
    for _ in range(20):
        playout.tick()
    assert len(messages) == 3  # nothing after the flush
