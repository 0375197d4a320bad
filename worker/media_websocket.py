"""Audio to Asterisk over chan_websocket (``externalMedia`` with ``transport=websocket``).

Used for wideband calls (unlike RTP external media it carries slin16, see
media_format.py) and, with SPEAKING_NARROWBAND_WEBSOCKET=1, narrowband ones. Asterisk
is the websocket server; we connect to ``/media/<connection id>`` with the ``media``
subprotocol, wait for ``MEDIA_START`` (adding the channel to a bridge before that fails
with 422), then send binary messages of CHUNK_FRAMES whole frames: chan_websocket cuts
them into 20 ms frames and times them itself, so the Playout keeps it only one to two
chunks ahead (worker/playout.py) and a flush sends ``FLUSH_MEDIA``, which drops what
it still holds. What Asterisk sends us (notifications; no media is asked for) is always
read, so its writer never stalls (asterisk/asterisk#2140).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
#: Frames per message: 100 ms. One message per 5 ticks instead of one per tick; the lead
#: over what Asterisk has played stays within 200 ms (chan_websocket queues ~20 s).
CHUNK_FRAMES = 5


class MediaWebsocket:
    """One media websocket. ``send`` never awaits: frames go through a queue to one
    writer task per session, so the clock tick stays synchronous."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[bytes | str] = asyncio.Queue()
        self._started = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="media-ws-read")
        self._writer = asyncio.create_task(self._write(), name="media-ws-write")

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, ari_url: str, connection_id: str
    ) -> MediaWebsocket:
        """Raises TimeoutError if Asterisk does not complete the handshake in time."""
        base = ari_url.rstrip("/").removesuffix("/ari").replace("http", "ws", 1)
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            ws = await http.ws_connect(f"{base}/media/{connection_id}", protocols=("media",))
        return cls(ws)

    async def wait_started(self) -> None:
        await self._started.wait()

    def send(self, payload: bytes) -> None:
        if not self._ws.closed:
            self._queue.put_nowait(payload)

    def flush(self) -> None:
        """Have Asterisk drop the audio it holds (after what is queued here: in order)."""
        if not self._ws.closed:
            self._queue.put_nowait("FLUSH_MEDIA")

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            if msg.data.startswith("MEDIA_START"):
                self._started.set()
            elif msg.data.startswith(("MEDIA_XOFF", "MEDIA_XON")):  # never expected: lead
                log.warning("media websocket flow control", extra={"notice": msg.data[:40]})

    async def _write(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                if isinstance(payload, str):
                    await self._ws.send_str(payload)
                else:
                    await self._ws.send_bytes(payload)
            except (ConnectionError, RuntimeError) as exc:
                log.warning("media websocket send failed", extra={"error": str(exc)})
                return

    async def close(self) -> None:
        for task in (self._writer, self._reader):
            task.cancel()
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._ws.close()
