"""Asterisk resources that carry a session's audio into a call.

For a call: a snoop channel on the referenced channel (whisper chosen from the
direction), an external-media channel that receives our RTP, and a mixing
bridge joining the two. Every resource id starts with the session's prefix so a
sweep after a crash can find what a dead worker left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from worker.ari import AriClient, AriError
from worker.direction import Whisper
from worker.media_format import MediaFormat
from worker.media_websocket import MediaWebsocket
from worker.rtp_socket import RtpSocket

log = logging.getLogger(__name__)

#: Every channel and bridge the worker creates has an id starting with this.
RESOURCE_PREFIX = "speaking-"
SETUP_TIMEOUT_S = 5.0
TEARDOWN_TIMEOUT_S = 2.0


class ChannelWaiters:
    """Futures for ARI events about channels we create or destroy, registered before
    the request that causes them: the event may arrive before the request's reply."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}

    def expect(self, event_type: str, channel_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiting[(event_type, channel_id)] = future
        return future

    def forget(self, event_type: str, channel_id: str) -> None:
        self._waiting.pop((event_type, channel_id), None)

    def fire(self, event_type: str, channel_id: str) -> None:
        future = self._waiting.pop((event_type, channel_id), None)
        if future is not None and not future.done():
            future.set_result(None)

    async def hang_up_all(self, ari: AriClient, channel_ids: list[str]) -> None:
        """Hang up channels and wait until Asterisk has destroyed them (hangup is
        asynchronous in Asterisk: a 204 only means the hangup was requested)."""
        # StasisEnd comes while the channel still exists; only ChannelDestroyed means it is
        # gone, and Asterisk sends it only to apps subscribed to the channel explicitly.
        gone = [self.expect("ChannelDestroyed", c) for c in channel_ids]
        try:
            for channel_id, future in zip(channel_ids, gone, strict=True):
                with contextlib.suppress(AriError, OSError):  # already gone, or Asterisk is
                    await ari.subscribe(f"channel:{channel_id}")
                try:
                    existed = await ari.hangup(channel_id)
                except (AriError, OSError) as exc:
                    log.warning("hangup failed", extra={"channel": channel_id, "error": str(exc)})
                    existed = False
                if not existed and not future.done():
                    future.set_result(None)
            async with asyncio.timeout(TEARDOWN_TIMEOUT_S):
                await asyncio.gather(*gone)
        except TimeoutError:
            log.warning("channels not destroyed in time", extra={"channels": ",".join(channel_ids)})
        finally:
            for channel_id in channel_ids:
                self.forget("ChannelDestroyed", channel_id)
                await ari.unsubscribe(f"channel:{channel_id}")


@dataclass
class CallMedia:
    """What one session created in Asterisk; ``teardown`` removes all of it."""

    ari: AriClient
    waiters: ChannelWaiters
    session_prefix: str
    target_channel: str
    rtp: RtpSocket | None = None
    media_ws: MediaWebsocket | None = None
    channels: list[str] = field(default_factory=list)
    bridge: str | None = None
    subscribed: bool = False

    @property
    def snoop_id(self) -> str:
        return f"{self.session_prefix}-snoop"

    @property
    def media_id(self) -> str:
        return f"{self.session_prefix}-media"

    @property
    def send(self) -> Callable[[bytes], None]:
        """Where the session's frames go: the RTP socket or the media websocket."""
        if self.media_ws is not None:
            return self.media_ws.send
        assert self.rtp is not None
        return self.rtp.send

    async def setup(self, whisper: Whisper, fmt: MediaFormat, rtp_host: str) -> MediaFormat:
        """Create snoop + external media + bridge; returns the format actually used.
        slin16 goes over a media websocket (RTP external media cannot receive it); if
        this Asterisk has no chan_websocket, the session falls back to mu-law over RTP.
        On failure, whatever exists is left recorded in ``self`` for ``teardown``
        (which the caller always runs)."""
        await self.ari.subscribe(f"channel:{self.target_channel}")
        self.subscribed = True
        waiters = self.waiters
        snoop_in = waiters.expect("StasisStart", self.snoop_id)
        media_in = waiters.expect("StasisStart", self.media_id)
        try:
            self.channels.append(self.snoop_id)
            await self.ari.snoop(self.target_channel, self.snoop_id, whisper.value)
            self.channels.append(self.media_id)
            if fmt is MediaFormat.SLIN16:
                try:
                    await self._websocket_media(fmt)
                except AriError as exc:
                    log.warning(
                        "no media websocket, using mu-law over RTP", extra={"error": str(exc)}
                    )
                    fmt = MediaFormat.ULAW
            if fmt is not MediaFormat.SLIN16:
                await self._rtp_media(fmt, rtp_host)
            self.bridge = self.session_prefix
            await self.ari.create_bridge(self.bridge, name=self.session_prefix)
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                await asyncio.gather(snoop_in, media_in)
                if self.media_ws is not None:
                    await self.media_ws.wait_started()
            await self.ari.add_to_bridge(self.bridge, self.snoop_id, self.media_id)
            return fmt
        finally:
            waiters.forget("StasisStart", self.snoop_id)
            waiters.forget("StasisStart", self.media_id)

    async def _rtp_media(self, fmt: MediaFormat, rtp_host: str) -> None:
        self.rtp = await RtpSocket.open(rtp_host)
        reply = await self.ari.external_media(
            self.media_id, f"{self.rtp.local_host}:{self.rtp.local_port}", fmt.asterisk_name
        )
        variables = reply.get("channelvars", {})
        self.rtp.remote = (
            variables["UNICASTRTP_LOCAL_ADDRESS"],
            int(variables["UNICASTRTP_LOCAL_PORT"]),
        )

    async def _websocket_media(self, fmt: MediaFormat) -> None:
        reply = await self.ari.external_media_websocket(self.media_id, fmt.asterisk_name)
        connection_id = reply.get("channelvars", {})["MEDIA_WEBSOCKET_CONNECTION_ID"]
        self.media_ws = await MediaWebsocket.connect(
            self.ari.http, self.ari.base_url, connection_id
        )

    async def teardown(self) -> None:
        """Remove every resource; safe to call twice and after a partial setup."""
        channels, self.channels = self.channels, []
        await self.waiters.hang_up_all(self.ari, channels)
        if self.bridge is not None:
            with contextlib.suppress(AriError, OSError):
                await self.ari.destroy_bridge(self.bridge)
            self.bridge = None
        if self.subscribed:
            await self.ari.unsubscribe(f"channel:{self.target_channel}")
            self.subscribed = False
        if self.rtp is not None:
            self.rtp.close()
            self.rtp = None
        if self.media_ws is not None:
            await self.media_ws.close()
            self.media_ws = None


def session_of(resource_id: str) -> str | None:
    """The speaking id a channel or bridge id of ours belongs to, or None if not ours."""
    if not resource_id.startswith(RESOURCE_PREFIX):
        return None
    rest = resource_id[len(RESOURCE_PREFIX) :]
    for suffix in ("-snoop", "-media"):
        if rest.endswith(suffix):
            return rest[: -len(suffix)]
    return rest


async def sweep_leftovers(
    ari: AriClient, waiters: ChannelWaiters, is_orphan: Callable[[str], Awaitable[bool]]
) -> int:
    """Remove channels and bridges of ours whose session is orphaned (stopped, unknown, or
    owned by this worker before a crash). Sessions live on another worker are left alone."""
    channels: list[str] = []
    for channel in await ari.list_channels():
        speaking_id = session_of(str(channel.get("id", "")))
        if speaking_id is not None and await is_orphan(speaking_id):
            channels.append(channel["id"])
    await waiters.hang_up_all(ari, channels)
    bridges = 0
    for bridge in await ari.list_bridges():
        speaking_id = session_of(str(bridge.get("id", "")))
        if speaking_id is not None and await is_orphan(speaking_id):
            bridges += await ari.destroy_bridge(bridge["id"])
    return len(channels) + bridges
