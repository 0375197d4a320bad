"""Asterisk resources that carry a session's audio into a call.

For a call: a snoop channel on the referenced channel (whisper chosen from the
direction), an external-media channel that receives our audio, and a mixing bridge
joining the two.

Names: every resource id is ``speaking-<tag>-<speaking id>[-snoop|-media]``, where the
tag names the deployment and the worker that made it (``resource_tag``). A sweep after
a crash removes only resources whose tag it knows: its own, or a dead worker's of the
same deployment; another deployment's channels on the same Asterisk are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from worker.ari import AriClient, AriError
from worker.direction import Whisper
from worker.media_format import MediaFormat
from worker.media_websocket import MediaWebsocket
from worker.rtp_socket import RtpSocket

log = logging.getLogger(__name__)

#: Every channel and bridge the worker creates has an id starting with this.
RESOURCE_PREFIX = "speaking-"
SETUP_TIMEOUT_S = 5.0
DESTROYED_WAIT_S = 2.0
_RESOURCE = re.compile(r"^speaking-([0-9a-f]{8})-(.+?)(-snoop|-media)?$")
#: What an unreachable, frozen or refusing Asterisk raises from a request.
ARI_FAILURES = (AriError, aiohttp.ClientError, OSError, TimeoutError)


def resource_tag(deployment: str, worker_id: str) -> str:
    """Eight hex digits naming (deployment, worker) inside every resource id."""
    return hashlib.sha256(f"{deployment}\0{worker_id}".encode()).hexdigest()[:8]


def parse_resource(resource_id: str) -> tuple[str, str] | None:
    """(tag, speaking id) of a channel or bridge id of ours, or None if it is not ours."""
    match = _RESOURCE.match(resource_id)
    return (match.group(1), match.group(2)) if match else None


class TeardownIncomplete(Exception):
    """Asterisk did not confirm that every resource is gone; ``teardown`` must be retried."""


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


async def destroy_channel(ari: AriClient, waiters: ChannelWaiters, channel_id: str) -> bool:
    """Hang a channel up and return True once Asterisk confirms it is gone (a hangup is
    asynchronous in Asterisk: a 204 only means it was requested). False if that could not
    be confirmed (Asterisk unreachable, frozen, or slow): try again later."""
    # StasisEnd comes while the channel still exists; only ChannelDestroyed means it is
    # gone, and Asterisk sends it only to apps subscribed to the channel explicitly.
    gone = waiters.expect("ChannelDestroyed", channel_id)
    try:
        with contextlib.suppress(*ARI_FAILURES):  # already gone, or Asterisk is
            await ari.subscribe(f"channel:{channel_id}")
        try:
            if not await ari.hangup(channel_id):
                return True  # 404: not there
            async with asyncio.timeout(DESTROYED_WAIT_S):
                await gone
            return True
        except TimeoutError:
            pass  # no event (websocket down?): ask
        except ARI_FAILURES as exc:
            log.warning("hangup failed", extra={"channel": channel_id, "error": str(exc)[:200]})
            return False
        try:
            return await ari.get_channel(channel_id) is None
        except ARI_FAILURES:
            return False
    finally:
        waiters.forget("ChannelDestroyed", channel_id)
        await ari.unsubscribe(f"channel:{channel_id}")


@dataclass
class CallMedia:
    """What one session created in Asterisk; ``teardown`` removes all of it."""

    ari: AriClient
    waiters: ChannelWaiters
    session_prefix: str  # speaking-<tag>-<speaking id>
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
        Each resource is recorded *before* the request that creates it, so ``teardown``
        (which the caller always runs on failure or cancellation) finds everything."""
        self.subscribed = True
        await self.ari.subscribe(f"channel:{self.target_channel}")
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
        """Remove every resource, keeping what could not be confirmed gone for the next
        try. Safe to call again and after a partial setup.

        Raises TeardownIncomplete while Asterisk has not confirmed all of it.
        """
        # No more audio, whatever Asterisk says: the sockets close first.
        if self.rtp is not None:
            self.rtp.close()
            self.rtp = None
        if self.media_ws is not None:
            await self.media_ws.close()
            self.media_ws = None
        self.channels = [
            c for c in self.channels if not await destroy_channel(self.ari, self.waiters, c)
        ]
        if self.bridge is not None:
            try:
                await self.ari.destroy_bridge(self.bridge)  # False (404): already gone
                self.bridge = None
            except ARI_FAILURES as exc:
                log.warning("bridge not destroyed", extra={"error": str(exc)[:200]})
        if self.channels or self.bridge is not None:
            raise TeardownIncomplete(
                f"not confirmed gone: {', '.join([*self.channels, *filter(None, [self.bridge])])}"
            )
        if self.subscribed:
            await self.ari.unsubscribe(f"channel:{self.target_channel}")
            self.subscribed = False
