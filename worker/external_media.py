"""The external-media channel that carries one session's audio into Asterisk.

Two transports, chosen by the format (see worker/media_format.py for why):

* mu-law over RTP (``UnicastRTP``): a UDP socket of ours, paced frame by frame;
* slin16 over a media websocket (chan_websocket), which Asterisk paces itself.

Asterisk sends back what the channel hears (the call, or the conference's mix); the
worker reads it only to keep the transport alive and never sends any of it back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from worker.ari import AriClient, AriError
from worker.media_format import MediaFormat
from worker.media_websocket import CHUNK_FRAMES, MediaWebsocket
from worker.resources import ChannelWaiters, TeardownIncomplete, destroy_all
from worker.rtp_socket import RtpSocket

log = logging.getLogger(__name__)


class ExternalMedia:
    """Our end of one external-media channel (the channel itself is Asterisk's).

    ``open`` raises AriError, aiohttp.ClientError or OSError if Asterisk refuses or
    cannot be reached; whatever it opened is then closed by ``close``.
    """

    def __init__(self, ari: AriClient, channel_id: str) -> None:
        self.ari = ari
        self.channel_id = channel_id
        self.rtp: RtpSocket | None = None
        self.websocket: MediaWebsocket | None = None

    async def open(self, fmt: MediaFormat, rtp_host: str, websocket: bool) -> MediaFormat:
        """Create the channel, over chan_websocket if ``websocket`` (slin16 always is),
        else RTP; returns the format used: where this Asterisk has no chan_websocket it
        falls back to mu-law over RTP."""
        if websocket or fmt is MediaFormat.SLIN16:
            try:
                await self._open_websocket(fmt)
                return fmt
            except AriError as exc:
                log.warning("no media websocket, using mu-law over RTP", extra={"error": str(exc)})
        await self._open_rtp(MediaFormat.ULAW, rtp_host)
        return MediaFormat.ULAW

    async def started(self) -> None:
        """Wait until Asterisk takes audio (a media websocket says so; RTP at once)."""
        if self.websocket is not None:
            await self.websocket.wait_started()

    @property
    def paced_by_us(self) -> bool:
        """RTP must be paced in real time by the worker; the websocket is paced by Asterisk."""
        return self.rtp is not None

    @property
    def chunk_frames(self) -> int:
        """Frames per send: one over RTP, CHUNK_FRAMES over the websocket."""
        return 1 if self.websocket is None else CHUNK_FRAMES

    def clear(self) -> None:
        """Drop the audio the transport still holds (the websocket's; RTP holds none)."""
        if self.websocket is not None:
            self.websocket.flush()

    @property
    def send(self) -> Callable[[bytes], None]:
        """Where the session's frames go."""
        if self.websocket is not None:
            return self.websocket.send
        assert self.rtp is not None, "send before open"
        return self.rtp.send

    async def close(self) -> None:
        """Stop sending (the channel is hung up by its owner)."""
        if self.rtp is not None:
            self.rtp.close()
            self.rtp = None
        if self.websocket is not None:
            await self.websocket.close()
            self.websocket = None

    async def _open_rtp(self, fmt: MediaFormat, rtp_host: str) -> None:
        self.rtp = await RtpSocket.open(rtp_host)
        reply = await self.ari.external_media(
            self.channel_id, f"{self.rtp.local_host}:{self.rtp.local_port}", fmt.asterisk_name
        )
        variables = reply.get("channelvars", {})
        self.rtp.remote = (
            variables["UNICASTRTP_LOCAL_ADDRESS"],
            int(variables["UNICASTRTP_LOCAL_PORT"]),
        )

    async def _open_websocket(self, fmt: MediaFormat) -> None:
        reply = await self.ari.external_media_websocket(self.channel_id, fmt.asterisk_name)
        connection_id = reply.get("channelvars", {})["MEDIA_WEBSOCKET_CONNECTION_ID"]
        self.websocket = await MediaWebsocket.connect(
            self.ari.media_http, self.ari.base_url, connection_id
        )


async def all_settled(*requests: Awaitable[Any]) -> list[Any]:
    """Run ``requests`` concurrently and return their results in order, but only once
    every one has finished: a request still in flight when setup gives up could create a
    resource after the teardown looked (a leak). Raises the first failure, after all."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class ExternalMediaPath:
    """What a session's media path (call or conference) shares: its audio goes out
    through one external-media channel, and its resources are removed the same way.

    Subclasses (dataclasses) hold the attributes below. Invariant: each resource is
    recorded in ``channels``/``bridge`` (and ``subscription``) *before* the request that
    creates it, so a teardown after a failed or cancelled setup finds everything.
    """

    ari: AriClient
    waiters: ChannelWaiters
    media: ExternalMedia | None
    channels: list[str]  # hung up in this order
    bridge: str | None
    subscription: str | None  # an event source of ours, dropped once all is gone

    @property
    def send(self) -> Callable[[bytes], None]:
        assert self.media is not None, "setup() first"
        return self.media.send

    @property
    def paced_by_us(self) -> bool:
        return self.media is not None and self.media.paced_by_us

    @property
    def chunk_frames(self) -> int:
        assert self.media is not None, "setup() first"
        return self.media.chunk_frames

    def clear_transport(self) -> None:
        if self.media is not None:
            self.media.clear()

    async def teardown(self) -> None:
        """Remove every resource of ours (channels, then our bridge), keeping what could
        not be confirmed gone for the next try. Safe to call again and after a partial
        setup.

        Raises TeardownIncomplete while Asterisk has not confirmed all of it.
        """
        if self.media is not None:  # no more audio, whatever Asterisk says
            await self.media.close()
        self.channels, self.bridge = await destroy_all(
            self.ari, self.waiters, self.channels, self.bridge
        )
        if self.channels or self.bridge is not None:
            left = [*self.channels, *filter(None, [self.bridge])]
            raise TeardownIncomplete(f"not confirmed gone: {', '.join(left)}")
        if self.subscription is not None:
            await self.ari.unsubscribe(self.subscription)
            self.subscription = None
