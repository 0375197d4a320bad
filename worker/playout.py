"""A session's outgoing audio: a buffer of 20 ms frames drained by the shared clock.

The producer (synthesis) pushes frames; the pacer calls ``tick`` every 20 ms,
which sends exactly one frame if there is one. Frames are encoded when pushed, a
batch in one numpy call, so a tick only adds the RTP header and sends (the per-frame
encode was a quarter of the tick's cost: bench/stream_cost.py); what is queued is the
payload, not the samples. Segment boundaries travel with
the frames, so "segment started/finished" is reported when its audio really
leaves, not when it was synthesized.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from worker.media_format import MediaFormat
from worker.rtp import RtpPacketizer


@dataclass(frozen=True, slots=True)
class Frame:
    samples: npt.NDArray[np.int16]
    segment_id: str
    first: bool = False
    last: bool = False


class _Queued(NamedTuple):
    """A frame waiting for its tick, encoded for the transport."""

    payload: bytes
    segment_id: str
    first: bool
    last: bool


class PlayoutEventKind(enum.Enum):
    SEGMENT_STARTED = "segment_started"
    SEGMENT_FINISHED = "segment_finished"


@dataclass(frozen=True, slots=True)
class PlayoutEvent:
    kind: PlayoutEventKind
    segment_id: str
    at: float


class Playout:
    """Frame buffer plus RTP packetizer for one session.

    ``tick`` and ``clear`` never await, so between a ``clear`` and the next tick no
    frame of what was cleared can be sent: that is what makes flush take effect
    within one frame.
    """

    def __init__(
        self,
        fmt: MediaFormat,
        send: Callable[[bytes], None],
        on_event: Callable[[PlayoutEvent], None],
        clock: Callable[[], float],
        max_ahead_frames: int = 150,
        rtp: bool = True,
        prompt_start: bool = True,
        chunk_frames: int = 1,
        on_clear: Callable[[], None] | None = None,
    ) -> None:
        """``chunk_frames`` > 1: the transport paces (chan_websocket), so frames go in
        messages of that many, kept between one and two chunks ahead of what it has
        played (one per tick); ``on_clear`` then also empties the transport's queue."""
        self.fmt = fmt
        self._send = send
        self._on_event = on_event
        self._clock = clock
        self._frames: deque[_Queued] = deque()
        # RTP transports get RTP packets; a media websocket takes bare payloads.
        self._rtp = RtpPacketizer(fmt.payload_type, fmt.samples_per_frame) if rtp else None
        self._encode = fmt.encode if rtp else fmt.encode_raw
        self._max_ahead = max_ahead_frames
        self._space = asyncio.Event()
        self._space.set()
        self._prompt_start = prompt_start
        self._idle = True  # the last tick had nothing to send
        self._chunk = chunk_frames
        self._on_clear = on_clear
        #: Chunked: frames handed to the transport and not yet played by it (it plays one
        #: per tick). Invariant: at most 2 * chunk_frames, so a flush has little to undo.
        self._lead = 0
        self.frames_sent = 0

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frames: Iterable[Frame]) -> None:
        """Queue frames. With ``prompt_start``, into an idle stream (nothing queued, the
        last tick silent) the first one is sent at once instead of at the next tick: a
        say's first audio does not wait up to 20 ms for the clock. The stream then runs
        one frame ahead of the clock until it empties, well inside what Asterisk buffers
        (whisper accepts 500 ms ahead)."""
        idle = self._prompt_start and self._idle and not self._frames
        batch = list(frames)
        if batch:
            payload = self._encode(np.concatenate([f.samples for f in batch]))
            per_sample = len(payload) // sum(f.samples.size for f in batch)
            at = 0
            for f in batch:
                end = at + f.samples.size * per_sample
                self._frames.append(_Queued(payload[at:end], f.segment_id, f.first, f.last))
                at = end
        if len(self._frames) >= self._max_ahead:
            self._space.clear()
        if idle and self._frames:
            if self._chunk > 1:
                self._send_chunk()
            else:
                self._send_next()

    async def wait_for_space(self) -> None:
        """Back-pressure: wait until less than ``max_ahead_frames`` are queued."""
        await self._space.wait()

    def clear(self) -> None:
        self._frames.clear()
        self._space.set()
        if self._on_clear is not None:  # what the transport holds goes too
            self._on_clear()
        self._lead = 0

    def discard(self, segment_id: str) -> None:
        """Drop the frames of one segment that have not been sent yet."""
        self._frames = deque(f for f in self._frames if f.segment_id != segment_id)
        if len(self._frames) < self._max_ahead:
            self._space.set()

    def tick(self) -> None:
        if self._chunk > 1:
            self._lead = max(0, self._lead - 1)
            if not self._frames:
                self._idle = True
            elif self._lead < self._chunk:
                self._send_chunk()
            return
        if not self._frames:
            self._idle = True
            if self._rtp is not None:
                self._rtp.tick_silent()
            return
        self._send_next()

    def _send_chunk(self) -> None:
        """Hand the transport enough frames to be two chunks ahead, in one message."""
        self._idle = False
        count = min(2 * self._chunk - self._lead, len(self._frames))
        frames = [self._frames.popleft() for _ in range(count)]
        if len(self._frames) < self._max_ahead:
            self._space.set()
        self._send(b"".join(f.payload for f in frames))
        self.frames_sent += count
        self._lead += count
        now = self._clock()
        for frame in frames:
            if frame.first:
                self._on_event(
                    PlayoutEvent(PlayoutEventKind.SEGMENT_STARTED, frame.segment_id, now)
                )
            if frame.last:
                self._on_event(
                    PlayoutEvent(PlayoutEventKind.SEGMENT_FINISHED, frame.segment_id, now)
                )

    def _send_next(self) -> None:
        self._idle = False
        frame = self._frames.popleft()
        if len(self._frames) < self._max_ahead:
            self._space.set()
        if self._rtp is not None:
            self._send(self._rtp.packet(frame.payload))
        else:
            self._send(frame.payload)
        self.frames_sent += 1
        now = self._clock()
        if frame.first:
            self._on_event(PlayoutEvent(PlayoutEventKind.SEGMENT_STARTED, frame.segment_id, now))
        if frame.last:
            self._on_event(PlayoutEvent(PlayoutEventKind.SEGMENT_FINISHED, frame.segment_id, now))
