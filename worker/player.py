"""Plays a session's queued text segments, in order, back to back.

Pipeline for one segment: split into sentences -> synthesize each (the engine
runs off the loop) -> one resampler for the whole segment -> exact 20 ms frames
-> the session's Playout, which the shared clock drains. Synthesis runs ahead of
playback up to the Playout's limit, so sentence n+1 is synthesized while
sentence n plays and the first audio leaves after the first sentence.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.engines.base import Engine, EngineError, Voice
from worker.framing import FrameAssembler, PcmBytes
from worker.playout import Frame, Playout
from worker.resample import SegmentResampler
from worker.segmentation import split_sentences

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


class Player:
    """Owns one session's segment queue and the task that synthesizes into its Playout."""

    def __init__(
        self,
        engine: Engine,
        voice: Voice,
        playout: Playout,
        on_problem: Callable[[SegmentProblem], None],
    ) -> None:
        self._engine = engine
        self._voice = voice
        self._playout = playout
        self._on_problem = on_problem
        self._queue: deque[Segment] = deque()
        self._ready = asyncio.Event()
        self._current: Segment | None = None
        # Segments taken from the queue whose last frame has not been sent yet, in order.
        self._in_flight: dict[str, None] = {}
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

    def notify_finished(self, segment_id: str) -> None:
        """The Playout sent the segment's last frame."""
        self._in_flight.pop(segment_id, None)

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
        self._on_problem(SegmentProblem(segment.segment_id, failed=True, reason=reason))

    async def _play(self, segment: Segment) -> None:
        fmt = self._playout.fmt
        resampler = SegmentResampler(self._engine.sample_rate(self._voice), fmt.rate)
        assembler = FrameAssembler(fmt.samples_per_frame)
        frames = _SegmentFrames(segment.segment_id, fmt.samples_per_frame)
        for sentence in split_sentences(segment.text):
            pcm = PcmBytes()  # a new byte carry per stream: providers restart at even bytes
            stream = self._engine.synthesize(sentence, self._voice)
            try:
                async for chunk in stream:
                    await self._push(frames.add(assembler.feed(resampler.feed(pcm.feed(chunk)))))
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()  # stops the engine's work at once on flush
        await self._push(frames.finish(assembler.feed(resampler.finish()) + assembler.finish()))

    async def _push(self, frames: list[Frame]) -> None:
        if frames:
            await self._playout.wait_for_space()
            self._playout.push(frames)


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
