"""Failure injection for the fake providers, driven by markers written in the text.

Markers are parsed and removed before synthesis, so the rest of the text is spoken:

* ``[fail 401]`` / ``[fail 429]`` / ``[fail 500]`` / ``[fail 503]``: answer with that
  failure (in the provider's own error shape) before any audio;
* ``[drop N]``: send N bytes of audio, then cut the connection / stream with no proper end;
* ``[stall N]``: send N bytes of audio, then nothing more and never end, until the client
  gives up (or the fake closes);
* ``[slow MS]``: MS extra milliseconds before the first byte (of audio or of an error).

Each fake also takes a global ``first_byte_ms`` added to every first byte.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from aiohttp import web

_MARKER = re.compile(r"\[(fail|drop|stall|slow)\s+(\d+)\]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Faults:
    """The failures requested by the markers of one text (all ``None``/0 = behave)."""

    fail: int | None = None  # an HTTP-like status to answer with instead of audio
    drop: int | None = None  # audio bytes to send before cutting the connection
    stall: int | None = None  # audio bytes to send before going silent forever
    slow_ms: int = 0  # extra delay before the first byte

    @staticmethod
    def parse(text: str) -> tuple[str, Faults]:
        """``text`` without its markers (ends stripped), and the faults they ask for."""
        found: dict[str, int] = {}
        for match in _MARKER.finditer(text):
            found[match.group(1).lower()] = int(match.group(2))
        clean = _MARKER.sub("", text).strip()
        return clean, Faults(
            fail=found.get("fail"),
            drop=found.get("drop"),
            stall=found.get("stall"),
            slow_ms=found.get("slow", 0),
        )

    @property
    def limit(self) -> int | None:
        """How many audio bytes may be sent before the drop or stall, if any."""
        cuts = [n for n in (self.drop, self.stall) if n is not None]
        return min(cuts) if cuts else None

    async def first_byte_delay(self, first_byte_ms: int) -> None:
        """Wait what the fake's global delay plus ``[slow]`` ask for."""
        total = first_byte_ms + self.slow_ms
        if total > 0:
            await asyncio.sleep(total / 1000)


def frames(audio: bytes, size: int) -> list[bytes]:
    """``audio`` cut into ``size``-byte pieces (the last one may be shorter)."""
    return [audio[i : i + size] for i in range(0, len(audio), size)]


async def stream_reply(
    request: web.Request,
    audio: bytes,
    faults: Faults,
    content_type: str,
    closing: asyncio.Event,
    chunk: int = 640,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream ``audio`` as a chunked HTTP reply, honouring ``[drop]`` and ``[stall]``.

    A drop closes the TCP connection after its bytes (what was sent still flushes), so
    the client sees a chunked body with no terminating chunk. A stall keeps the reply
    open and silent until the client leaves or ``closing`` is set (the fake stops); the
    server must run with ``handler_cancellation=True`` for a leaving client to end it.
    """
    response = web.StreamResponse(headers={**(headers or {}), "Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for piece in frames(audio[: faults.limit], chunk):
        await response.write(piece)
        await asyncio.sleep(0)  # let other streams run; no real-time pacing
    if faults.stall is not None:
        await closing.wait()
    if faults.limit is not None:
        if request.transport is not None:
            request.transport.close()
        await asyncio.Future()  # connection_lost cancels this handler
    await response.write_eof()
    return response
