"""Plays a session's queued text segments, in order, back to back.

Pipeline for one segment: split into pieces (sentences for the offline engines, whole
requests for the cloud ones) -> synthesize each (off the loop, or streamed from the
provider) -> one resampler for the whole segment (none when the provider already speaks
at the call's rate) -> exact 20 ms frames -> the session's Playout, which the shared
clock drains. Synthesis runs ahead of playback up to the Playout's limit.

Providers: the session's own first, then the deployment's fallbacks. A provider that
fails before any frame of the segment was sent is replaced by the next one, from the
segment's start; once its audio is playing a failure ends the segment (a retry would
repeat what was heard). Identical pieces come from the synthesis cache when there is one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from worker.engines.base import EngineError, FailureKind, Synthesis
from worker.framing import FrameAssembler, PcmBytes
from worker.playout import Frame, Playout
from worker.resample import SegmentResampler
from worker.synthesis_cache import CacheKey, SynthesisCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Segment:
    segment_id: str
    text: str


@dataclass(frozen=True, slots=True)
class SegmentProblem:
    """A segment that will not play to its end: flushed, or failed with a reason."""

    segment_id: str
    failed: bool
    reason: str = ""


#: Cached audio is fed to the chain in pieces of this size (4,096 samples, what the
#: engines deliver at a time).
CACHED_CHUNK_BYTES = 8192


class SynthesisObserver(Protocol):
    """What the player tells about its providers (metrics, and the segment's events)."""

    def speaking(self, segment_id: str, provider: str, first_byte_s: float) -> None:
        """This provider's audio is the segment's (reported before its first frame)."""

    def synthesized(self, provider: str, characters: int) -> None:
        """A piece of text was synthesized (what the provider bills)."""

    def failed(self, provider: str, kind: FailureKind) -> None: ...


class Player:
    """Owns one session's segment queue and the task that synthesizes into its Playout."""

    def __init__(
        self,
        syntheses: Sequence[Synthesis],
        playout: Playout,
        on_problem: Callable[[SegmentProblem], None],
        observer: SynthesisObserver,
        cache: SynthesisCache | None = None,
    ) -> None:
        self._syntheses = list(syntheses)
        self._playout = playout
        self._on_problem = on_problem
        self._observer = observer
        self._cache = cache
        self._queue: deque[Segment] = deque()
        self._ready = asyncio.Event()
        self._current: Segment | None = None
        # Segments taken from the queue whose last frame has not been sent yet, in order.
        self._in_flight: dict[str, None] = {}
        self._sent: set[str] = set()  # segments whose first frame was sent
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="player")

    def enqueue(self, segment: Segment) -> None:
        self._queue.append(segment)
        self._ready.set()

    @property
    def pending(self) -> int:
        """Segments queued or playing."""
        return len(self._queue) + len(self._in_flight)

    def notify_started(self, segment_id: str) -> None:
        """The Playout sent the segment's first frame: from now on no provider may replace
        the one speaking it."""
        self._sent.add(segment_id)

    def notify_finished(self, segment_id: str) -> None:
        """The Playout sent the segment's last frame."""
        self._in_flight.pop(segment_id, None)
        self._sent.discard(segment_id)

    async def flush(self) -> list[str]:
        """Silence the session now and drop every queued segment; returns their ids."""
        flushed = await self._drop("flush")
        self.start()
        return flushed

    async def close(self, reason: str = "stop") -> list[str]:
        """Stop for good; unfinished segments are reported dropped with ``reason``."""
        return await self._drop(reason)

    async def _drop(self, reason: str) -> list[str]:
        # Cancel, clear and drain happen with no await in between, so the very next
        # clock tick already sends nothing and no dropped frame can be pushed again.
        dropped = [*self._in_flight, *(s.segment_id for s in self._queue)]
        self._in_flight.clear()
        self._sent.clear()
        self._queue.clear()
        self._current = None
        task, self._task = self._task, None
        if task:
            task.cancel()
        self._playout.clear()
        for segment_id in dropped:
            self._on_problem(SegmentProblem(segment_id, failed=False, reason=reason))
        if task:
            await asyncio.gather(task, return_exceptions=True)
        return dropped

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            self._current = self._queue.popleft()
            self._in_flight[self._current.segment_id] = None
            try:
                await self._play(self._current)
            except EngineError as exc:
                self._fail(self._current, str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in one segment must not kill the session
                log.exception("segment failed", extra={"segment_id": self._current.segment_id})
                self._fail(self._current, f"internal error ({type(exc).__name__})")
            self._current = None

    def _fail(self, segment: Segment, reason: str) -> None:
        # A segment is played whole or not at all: a half-synthesized one is not sent.
        self._playout.discard(segment.segment_id)
        self._in_flight.pop(segment.segment_id, None)
        self._sent.discard(segment.segment_id)
        self._on_problem(SegmentProblem(segment.segment_id, failed=True, reason=reason))

    async def _play(self, segment: Segment) -> None:
        reasons: list[str] = []
        for synthesis in self._syntheses:
            try:
                await self._play_with(segment, synthesis)
                return
            except EngineError as exc:
                self._observer.failed(synthesis.provider, exc.kind)
                reasons.append(str(exc))
                if segment.segment_id in self._sent:
                    break  # its audio is being heard: a retry would repeat it
                self._playout.discard(segment.segment_id)  # what was made, never sent
                log.warning(
                    "provider failed; trying the next",
                    extra={"provider": synthesis.provider, "error": str(exc)[:200]},
                )
        raise EngineError("; ".join(reasons))

    async def _play_with(self, segment: Segment, synthesis: Synthesis) -> None:
        fmt = self._playout.fmt
        resampler = SegmentResampler(synthesis.rate, fmt.rate)
        assembler = FrameAssembler(fmt.samples_per_frame)
        frames = _SegmentFrames(segment.segment_id, fmt.samples_per_frame)
        for index, piece in enumerate(synthesis.split(segment.text)):
            pcm = PcmBytes()  # a new byte carry per stream: providers restart at even bytes
            key = CacheKey(
                synthesis.provider,
                synthesis.voice.voice_id,
                synthesis.voice.language,
                synthesis.rate,
                piece,
            )
            cached = await self._cache.get(key) if self._cache is not None else None
            if cached is not None:
                if index == 0:
                    self._observer.speaking(segment.segment_id, synthesis.provider, 0.0)
                # In engine-sized pieces (each push yields): a whole sentence at once held
                # the loop for milliseconds per session, and 50 sessions starting together
                # made the clock's ticks late (bench/load.py).
                for at in range(0, len(cached), CACHED_CHUNK_BYTES):
                    piece_pcm = pcm.feed(cached[at : at + CACHED_CHUNK_BYTES])
                    await self._push(frames.add(assembler.feed(resampler.feed(piece_pcm))))
                continue
            kept: list[bytes] | None = [] if self._cache is not None else None
            asked = time.monotonic()
            stream = synthesis.stream(piece)
            try:
                async for chunk in stream:
                    if asked:
                        if index == 0:
                            first_byte = time.monotonic() - asked
                            self._observer.speaking(
                                segment.segment_id, synthesis.provider, first_byte
                            )
                        asked = 0.0
                    if kept is not None:
                        kept.append(chunk)
                    await self._push(frames.add(assembler.feed(resampler.feed(pcm.feed(chunk)))))
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()  # stops the provider's work at once on flush
            self._observer.synthesized(synthesis.provider, len(piece))
            if kept is not None and self._cache is not None:  # whole: it ended by itself
                await self._cache.put(key, b"".join(kept))
        await self._push(frames.finish(assembler.feed(resampler.finish()) + assembler.finish()))

    async def _push(self, frames: list[Frame]) -> None:
        if frames:
            await self._playout.wait_for_space()
            self._playout.push(frames)
        # Let the clock tick between two pieces of work: chunks ready in a queue (a fast
        # engine, the cache) would otherwise be processed back to back without a yield.
        await asyncio.sleep(0)


class _SegmentFrames:
    """Tags a segment's frames: the first one, and (by holding one frame back) the last one."""

    def __init__(self, segment_id: str, frame_samples: int) -> None:
        self._segment_id = segment_id
        self._frame_samples = frame_samples
        self._held: npt.NDArray[np.int16] | None = None
        self._first = True

    def add(self, samples: list[npt.NDArray[np.int16]]) -> list[Frame]:
        if not samples:
            return []
        ready = ([self._held] if self._held is not None else []) + samples[:-1]
        self._held = samples[-1]
        return [self._frame(s, last=False) for s in ready]

    def finish(self, samples: list[npt.NDArray[np.int16]]) -> list[Frame]:
        out = self.add(samples)
        if self._held is None:  # the engine produced no audio: still play one silent frame
            self._held = np.zeros(self._frame_samples, dtype=np.int16)
        out.append(self._frame(self._held, last=True))
        self._held = None
        return out

    def _frame(self, samples: npt.NDArray[np.int16], last: bool) -> Frame:
        frame = Frame(samples, self._segment_id, first=self._first, last=last)
        self._first = False
        return frame
