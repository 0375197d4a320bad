"""The offline engines (espeak, piper) and the thread adapter they share.

Bounds on timing are generous on purpose: they check behaviour (streaming, prompt
stop, a free event loop), not speed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from piper import PiperVoice

from worker.engines import piper as piper_module
from worker.engines.base import UnsupportedVoice, Voice
from worker.engines.espeak import EspeakEngine
from worker.engines.piper import VOICE_ID, PiperEngine
from worker.engines.threaded import Emit, iterate_generator_in_thread, iterate_in_thread
from worker.segmentation import split_sentences

ONE = "Good morning, and thank you for calling."
THREE = (
    "Good morning, and thank you for calling. Your call is important to us and will be "
    "answered shortly. Please stay on the line while we connect you to an agent."
)
LONG = " ".join([THREE] * 10)


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


def pcm(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype=np.int16)


def assert_speech(samples: np.ndarray, rate: int, min_seconds: float) -> None:
    assert len(samples) / rate >= min_seconds
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > 300, f"audio looks silent (rms {rms:.0f})"


async def max_tick_gap(work: Awaitable[object]) -> float:
    """Run ``work`` while a 10 ms ticker runs; return the longest gap between ticks."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        await work
    finally:
        done.set()
        await task
    assert len(gaps) >= 3, "synthesis was too short to observe the loop"
    return max(gaps)


@pytest.fixture(scope="session")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture(scope="session")
async def piper() -> PiperEngine:
    engine = PiperEngine()
    await engine.prepare(engine.resolve_voice("en-US", ""))
    return engine


# -- the thread adapter ------------------------------------------------------------------


async def test_adapter_delivers_in_order_then_raises() -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(200):
            yield i.to_bytes(2, "little")
        raise ValueError("boom")

    received: list[int] = []
    with pytest.raises(ValueError, match="boom"):
        async for chunk in iterate_generator_in_thread(chunks, max_pending=4):
            received.append(int.from_bytes(chunk, "little"))
    assert received == list(range(200))


async def test_adapter_memory_is_bounded() -> None:
    produced = 0

    def chunks() -> Iterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"x"

    iterator = iterate_generator_in_thread(chunks, max_pending=4)
    await anext(iterator)
    await asyncio.sleep(0.2)  # the producer would run far ahead if it could
    assert produced <= 4 + 2
    await iterator.aclose()


async def test_adapter_aclose_stops_a_slow_producer_without_waiting() -> None:
    closed = threading.Event()

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                time.sleep(0.05)  # a slow library step that cannot be interrupted
                yield b"x"
        finally:
            closed.set()

    iterator = iterate_generator_in_thread(chunks)
    await anext(iterator)
    started = time.perf_counter()
    await iterator.aclose()
    assert time.perf_counter() - started < 0.02  # did not wait for the next step
    assert await asyncio.to_thread(closed.wait, 1.0)  # stopped at its next chunk


async def test_adapter_cancel_stops_a_producer_blocked_on_a_full_queue() -> None:
    stopped = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1)

    def produce(emit: Emit) -> None:
        while emit(b"x"):
            pass
        stopped.set()

    first = asyncio.Event()

    async def consume() -> None:
        async for _ in iterate_in_thread(produce, executor=executor, max_pending=2):
            first.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(stopped.wait, 1.0)
    executor.shutdown(wait=True)


# -- espeak ------------------------------------------------------------------------------


def test_espeak_resolves_bcp47_tags(espeak: EspeakEngine) -> None:
    assert espeak.resolve_voice("en-US", "") == Voice("gmw/en-US", "en-US")
    assert espeak.resolve_voice("ko-KR", "").voice_id == "ko"
    assert espeak.resolve_voice("de", "").voice_id == "gmw/de"
    assert espeak.resolve_voice("zh-CN", "").voice_id == "sit/cmn"
    assert espeak.resolve_voice("pt_BR", "").voice_id == "roa/pt-BR"
    assert espeak.resolve_voice("en-US", "ko").voice_id == "ko"  # voice_id overrides
    assert espeak.sample_rate(espeak.resolve_voice("en", "")) == 22050


def test_espeak_unsupported_language_lists_examples(espeak: EspeakEngine) -> None:
    with pytest.raises(UnsupportedVoice, match=r"'xx-YY'.*en-US.*ko"):
        espeak.resolve_voice("xx-YY", "")
    with pytest.raises(UnsupportedVoice, match="no voice 'robot'"):
        espeak.resolve_voice("en-US", "robot")


async def test_espeak_streams_plausible_audio(espeak: EspeakEngine) -> None:
    voice = espeak.resolve_voice("en-US", "")
    await espeak.prepare(voice)
    rate = espeak.sample_rate(voice)
    short, long = (
        await collect(espeak.synthesize(ONE, voice)),
        await collect(espeak.synthesize(THREE, voice)),
    )
    assert len(long) > 10  # streamed as the callback delivers (~60 ms each)
    assert_speech(pcm(long), rate, min_seconds=4.0)
    ratio = len(pcm(long)) / len(pcm(short))
    assert 2.0 < ratio < 6.0  # the text is 3.7 times longer


async def test_espeak_speaks_korean(espeak: EspeakEngine) -> None:
    voice = espeak.resolve_voice("ko-KR", "")
    samples = pcm(await collect(espeak.synthesize("안녕하세요. 만나서 반갑습니다.", voice)))
    assert_speech(samples, espeak.sample_rate(voice), min_seconds=1.0)


async def test_espeak_concurrent_sessions_do_not_mix(espeak: EspeakEngine) -> None:
    english, korean = espeak.resolve_voice("en-US", ""), espeak.resolve_voice("ko", "")
    text_ko = "안녕하세요. 만나서 반갑습니다."
    alone = [await collect(espeak.synthesize(THREE, english))]
    alone.append(await collect(espeak.synthesize(text_ko, korean)))
    together = await asyncio.gather(
        collect(espeak.synthesize(THREE, english)), collect(espeak.synthesize(text_ko, korean))
    )
    # espeak adds a little randomness (noise sources), so compare durations, not bytes.
    for mixed, reference in zip(together, alone, strict=True):
        assert len(pcm(mixed)) == pytest.approx(len(pcm(reference)), rel=0.01)


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_espeak_stops_promptly_and_stays_usable(espeak: EspeakEngine, how: str) -> None:
    await stop_early_then_reuse(espeak, espeak.resolve_voice("en-US", ""), how, bound=0.02)


async def test_espeak_a_stream_not_being_read_does_not_hold_up_the_others(
    espeak: EspeakEngine,
) -> None:
    # The longest piece a session asks for: one sentence of about 280 characters (~18 s).
    piece = ", ".join(["please stay on the line while we connect you"] * 6) + "."
    assert split_sentences(piece) == [piece]
    voice = espeak.resolve_voice("en-US", "")
    stalled = espeak.synthesize(piece, voice)
    await anext(stalled)  # its session's Playout is full: it reads nothing more for now
    try:
        # Alone this takes a few ms; behind a blocked espeak thread it would never start.
        async with asyncio.timeout(2):
            other = await collect(espeak.synthesize(ONE, voice))
        assert_speech(pcm(other), espeak.sample_rate(voice), min_seconds=1.0)
    finally:
        await stalled.aclose()


async def test_espeak_does_not_block_the_loop(espeak: EspeakEngine) -> None:
    voice = espeak.resolve_voice("en-US", "")
    assert await max_tick_gap(collect(espeak.synthesize(LONG + LONG, voice))) < 0.1


# -- piper -------------------------------------------------------------------------------


def test_piper_voice_and_languages(piper: PiperEngine) -> None:
    assert piper.resolve_voice("en-US", "") == Voice(VOICE_ID, "en-US")
    assert piper.resolve_voice("en", VOICE_ID).voice_id == VOICE_ID
    assert piper.resolve_voice("en_GB", "").voice_id == VOICE_ID
    assert piper.sample_rate(piper.resolve_voice("en-US", "")) == 22050
    with pytest.raises(UnsupportedVoice, match=r"English only.*'ko-KR'.*en-US"):
        piper.resolve_voice("ko-KR", "")
    with pytest.raises(UnsupportedVoice, match=VOICE_ID):
        piper.resolve_voice("en-US", "en_US-lessac-high")


async def test_piper_concurrent_prepares_load_once(
    monkeypatch: pytest.MonkeyPatch, piper: PiperEngine
) -> None:
    real_load = PiperVoice.load
    calls = 0

    def counting_load(*args: object, **kwargs: object) -> PiperVoice:
        nonlocal calls
        calls += 1
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(piper_module, "_voices", {})
    monkeypatch.setattr(PiperVoice, "load", staticmethod(counting_load))
    voice = piper.resolve_voice("en-US", "")
    await asyncio.gather(*(PiperEngine().prepare(voice) for _ in range(3)))
    assert calls == 1 and piper_module.is_loaded()


async def test_piper_streams_plausible_audio(piper: PiperEngine) -> None:
    voice = piper.resolve_voice("en-US", "")
    rate = piper.sample_rate(voice)
    short, long = (
        await collect(piper.synthesize(ONE, voice)),
        await collect(piper.synthesize(THREE, voice)),
    )
    assert len(long) == 3  # one chunk per sentence
    assert_speech(pcm(long), rate, min_seconds=4.0)
    assert 2.0 < len(pcm(long)) / len(pcm(short)) < 6.0


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_piper_stops_promptly_and_stays_usable(piper: PiperEngine, how: str) -> None:
    await stop_early_then_reuse(piper, piper.resolve_voice("en-US", ""), how, bound=0.05)


async def test_piper_does_not_block_the_loop(piper: PiperEngine) -> None:
    voice = piper.resolve_voice("en-US", "")
    assert await max_tick_gap(collect(piper.synthesize(THREE, voice))) < 0.1


# -- shared ------------------------------------------------------------------------------


async def stop_early_then_reuse(
    engine: EspeakEngine | PiperEngine, voice: Voice, how: str, bound: float
) -> None:
    """Stop a long synthesis after its first chunk; the stop must not wait for the rest."""
    if how == "aclose":
        iterator = engine.synthesize(LONG, voice)
        assert isinstance(iterator, AsyncGenerator)
        await anext(iterator)
        started = time.perf_counter()
        await iterator.aclose()
    else:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.synthesize(LONG, voice):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert time.perf_counter() - started < bound
    # Usable again, and not stuck behind the abandoned synthesis of LONG.
    started = time.perf_counter()
    assert_speech(pcm(await collect(engine.synthesize(ONE, voice))), 22050, min_seconds=1.0)
    assert time.perf_counter() - started < 2.0


async def test_espeak_and_piper_run_together(espeak: EspeakEngine, piper: PiperEngine) -> None:
    korean, english = espeak.resolve_voice("ko", ""), piper.resolve_voice("en-US", "")
    text_ko = "안녕하세요. 만나서 반갑습니다."
    alone = b"".join(await collect(espeak.synthesize(text_ko, korean)))
    together, spoken = await asyncio.gather(
        collect(espeak.synthesize(text_ko, korean)), collect(piper.synthesize(THREE, english))
    )
    # Piper's own espeak-ng (set to en-us) did not switch ours away from Korean.
    assert len(pcm(together)) == pytest.approx(len(pcm([alone])), rel=0.01)
    assert_speech(pcm(spoken), 22050, min_seconds=4.0)


_ORDER_SCRIPT = """
import asyncio, sys
from worker.engines.espeak import EspeakEngine
from worker.engines.piper import PiperEngine

async def main() -> None:
    engines = {"espeak": EspeakEngine, "piper": PiperEngine}
    for name in sys.argv[1:]:
        engine = engines[name]()
        voice = engine.resolve_voice("en-US", "")
        audio = b"".join([c async for c in engine.synthesize("Hello there.", voice)])
        assert len(audio) > 20000, (name, len(audio))
    print("ok")

asyncio.run(main())
"""


@pytest.mark.parametrize("order", [["espeak", "piper", "espeak"], ["piper", "espeak", "piper"]])
def test_espeak_and_piper_coexist_in_either_load_order(order: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _ORDER_SCRIPT, *order],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
