"""The one interface a session's runner uses for what it speaks into.

Calls (worker/call_media.py) and conferences (worker/conference_media.py) differ in
what they create in Asterisk and in how their end is noticed; the runner treats both
alike through this protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from worker.errors import CommandError
from worker.media_format import MediaFormat


class MediaPath(Protocol):
    """What a session speaks into. Methods that talk to Asterisk raise its failures
    (worker/resources.py: ARI_FAILURES); ``teardown`` raises TeardownIncomplete."""

    #: Our channels that exist or are being created.
    channels: list[str]

    @property
    def lock_id(self) -> str:
        """The id the one-session-per-reference lock is taken on."""

    def watched(self) -> tuple[str, ...]:
        """Event keys (channel ids, ``bridge:<id>``) whose end stops the session."""

    @property
    def polled(self) -> bool:
        """Whether the reference's end must be polled for (``gone``): it sends no event."""

    async def check(self) -> CommandError | None:
        """Why speech cannot be attached now, or None."""

    async def native_formats(self) -> str:
        """The reference's native formats, ``(a|b)``, to choose the media format from."""

    async def gone(self) -> bool:
        """Whether the reference ended or our way into it was cut (polled, and checked
        after a reconnect of the events websocket)."""

    async def setup(self, fmt: MediaFormat, rtp_host: str, websocket: bool) -> MediaFormat:
        """Create what carries the audio (over chan_websocket if ``websocket``, else RTP
        from ``rtp_host``); returns the format actually used."""

    @property
    def send(self) -> Callable[[bytes], None]:
        """Where the session's encoded frames go."""

    @property
    def chunk_frames(self) -> int:
        """Frames per send (more than one where the transport paces itself)."""

    def clear_transport(self) -> None:
        """Drop the audio the transport holds and has not played yet (a flush)."""

    @property
    def paced_by_us(self) -> bool:
        """Whether the worker paces the frames in real time (RTP) or Asterisk does."""

    async def teardown(self) -> None:
        """Remove everything created; safe to repeat."""
