"""What a session creates in Asterisk to speak into a call.

A snoop channel on the referenced channel (whisper chosen from the direction), an
external-media channel that receives our audio, and a mixing bridge joining the two.
Names and teardown rules are in worker/resources.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from worker.ari import NATIVE_FORMATS, AriClient, channel_var
from worker.direction import Whisper
from worker.errors import CommandError, ErrorCode, conflict
from worker.external_media import ExternalMedia, ExternalMediaPath, all_settled
from worker.media_format import MediaFormat
from worker.resources import ARI_FAILURES, MEDIA, SNOOP, ChannelWaiters

SETUP_TIMEOUT_S = 5.0


@dataclass
class CallMedia(ExternalMediaPath):
    """One call session's resources; ``teardown`` (ExternalMediaPath) removes all of it."""

    ari: AriClient
    waiters: ChannelWaiters
    session_prefix: str  # speaking-<tag>-<speaking id>
    target_channel: str
    whisper: Whisper
    media: ExternalMedia | None = None
    channels: list[str] = field(default_factory=list)
    bridge: str | None = None
    subscription: str | None = None
    #: The call's channel as ``check`` found it (its ``channelvars`` may save a request).
    snapshot: dict[str, object] | None = None

    @property
    def lock_id(self) -> str:
        """What the one-session-per-reference lock is taken on: the call's channel."""
        return self.target_channel

    def watched(self) -> tuple[str, ...]:
        """Channels whose end stops the session: the call's and our own."""
        return (self.target_channel, self.session_prefix + SNOOP, self.session_prefix + MEDIA)

    @property
    def polled(self) -> bool:
        return False  # a call's end comes as channel events

    async def check(self) -> CommandError | None:
        """Why this call cannot take speech now (absent, not answered), or None.
        Raises ARI_FAILURES if Asterisk does not answer."""
        channel = self.snapshot = await self.ari.channel(self.target_channel)
        if channel is None:
            return CommandError(
                ErrorCode.NOT_FOUND, f"call {self.target_channel} does not exist here"
            )
        if channel.get("id") != self.target_channel:
            # Asterisk's lookup ignores case; a second spelling must not be a second lock.
            return CommandError(
                ErrorCode.INVALID,
                f"call {self.target_channel} is channel {channel.get('id')} in Asterisk; "
                "reference_id must be the channel's id exactly as Asterisk spells it",
            )
        if channel.get("state") != "Up":
            return conflict(
                f"call {self.target_channel} is not answered (state {channel.get('state')}); "
                "a speaking session needs a call in progress (Up)",
                call_state=str(channel.get("state")),
            )
        return None

    async def native_formats(self) -> str:
        known = channel_var(self.snapshot, NATIVE_FORMATS)
        if known is not None:
            return known
        return await self.ari.get_variable(self.target_channel, NATIVE_FORMATS) or ""

    async def gone(self) -> bool:
        """Whether the call or one of our channels vanished (checked after a reconnect)."""
        for channel_id in [self.target_channel, *self.channels]:
            if await self.ari.get_channel(channel_id) is None:
                return True
        return False

    async def setup(self, fmt: MediaFormat, rtp_host: str, websocket: bool) -> MediaFormat:
        """Create snoop + external media + bridge; returns the format actually used.
        Raises ARI_FAILURES; the caller then always runs ``teardown``.

        The four creating requests do not depend on each other, so they go to Asterisk
        at once: one round trip instead of four, which is most of a create's latency when
        Asterisk is busy (bench/load.py). Only joining the bridge waits for them all."""
        self.subscription = f"channel:{self.target_channel}"
        snoop_id, media_id = self.session_prefix + SNOOP, self.session_prefix + MEDIA
        snoop_in = self.waiters.expect("StasisStart", snoop_id)
        media_in = self.waiters.expect("StasisStart", media_id)
        # Recorded before their requests (ExternalMediaPath's invariant).
        self.channels += [snoop_id, media_id]
        self.bridge = self.session_prefix
        self.media = ExternalMedia(self.ari, media_id)
        try:
            results = await all_settled(
                self.ari.subscribe(self.subscription),
                self.ari.snoop(self.target_channel, snoop_id, self.whisper.value),
                self.media.open(fmt, rtp_host, websocket),
                self.ari.create_bridge(self.bridge, name=self.session_prefix),
            )
            fmt = results[2]
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                await asyncio.gather(snoop_in, media_in)
                await self.media.started()
            await self.ari.add_to_bridge(self.bridge, snoop_id, media_id)
            return fmt
        finally:
            self.waiters.forget("StasisStart", snoop_id)
            self.waiters.forget("StasisStart", media_id)


__all__ = ["ARI_FAILURES", "CallMedia"]
