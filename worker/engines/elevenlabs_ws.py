"""ElevenLabs' ``multi-stream-input`` websocket (the SDK has no client for it; this one is
on ``websockets``), for deployments that feed text in pieces.

One socket per session, opened while the session initiates (``prepare``) and opened
again transparently when it dropped or timed out while idle (``inactivity_timeout``,
180 s, the most ElevenLabs allows). One context per segment: its text is sent, then
flushed; audio messages carry the context id and a final message ends it. Barge-in is
``close_context`` on the same socket; audio of a closed context can still arrive, so
every message is routed by its context id and those of closed contexts are dropped.

Invariant: only the reader task reads the socket; each context's audio goes into its own
queue, so a stream sees its own audio and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from worker.engines.base import EngineError, FailureKind, Voice
from worker.engines.streams import guarded, http_failure
from worker.voices import ELEVENLABS

PROVIDER = ELEVENLABS.provider

INACTIVITY_TIMEOUT_S = 180
CONNECT_TIMEOUT_S = 5.0
_END = object()  # the context's audio is complete


class ElevenLabsSocketSynthesis:
    """One session's voice over one multi-stream-input socket."""

    provider = PROVIDER

    def __init__(self, base_url: str, api_key: str, model_id: str, voice: Voice, rate: int) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._model_id = model_id
        self.voice = voice
        self.rate = rate if rate in (8000, 16000, 22050, 24000) else 16000
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._contexts: dict[str, asyncio.Queue[Any]] = {}
        self._lock = asyncio.Lock()

    def split(self, text: str) -> list[str]:
        return [text]

    def _url(self) -> str:
        base = self._base_url.rstrip("/").replace("http", "ws", 1)
        query = urlencode(
            {
                "model_id": self._model_id,
                "output_format": f"pcm_{self.rate}",
                "language_code": ELEVENLABS.locale_for(self.voice.language),
                "inactivity_timeout": INACTIVITY_TIMEOUT_S,
            }
        )
        return f"{base}/v1/text-to-speech/{self.voice.voice_id}/multi-stream-input?{query}"

    async def prepare(self) -> None:
        await self._connection()

    async def _connection(self) -> ClientConnection:
        """The open socket, opened (again) if needed."""
        async with self._lock:
            if self._ws is not None and self._reader is not None and not self._reader.done():
                return self._ws
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    self._ws = await connect(
                        self._url(), additional_headers={"xi-api-key": self._api_key}
                    )
            except websockets.InvalidStatus as exc:
                raise http_failure(PROVIDER, exc.response.status_code) from None
            except (OSError, TimeoutError, websockets.WebSocketException):
                raise EngineError(f"{PROVIDER}: could not be reached", FailureKind.SERVER) from None
            self._reader = asyncio.create_task(self._read(self._ws), name="elevenlabs-ws")
            return self._ws

    async def _read(self, ws: ClientConnection) -> None:
        failure: EngineError | None = None
        try:
            async for raw in ws:
                message = json.loads(raw)
                context = message.get("contextId") or message.get("context_id")
                if message.get("error") or (message.get("message") and not context):
                    failure = _message_failure(message)
                    continue
                queue = self._contexts.get(str(context))
                if queue is None:
                    continue  # a closed context's late audio: dropped by its id
                if message.get("audio"):
                    queue.put_nowait(base64.b64decode(message["audio"]))
                if message.get("isFinal") or message.get("is_final"):
                    queue.put_nowait(_END)
        except websockets.ConnectionClosed as exc:
            failure = failure or _close_failure(exc)
        finally:
            error = failure or EngineError(f"{PROVIDER}: the socket closed", FailureKind.DROPPED)
            for queue in self._contexts.values():
                queue.put_nowait(error)

    def stream(self, text: str) -> AsyncIterator[bytes]:
        return guarded(self._context(text), PROVIDER, _unexpected)

    async def _context(self, text: str) -> AsyncIterator[bytes]:
        ws = await self._connection()
        context = uuid.uuid4().hex
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._contexts[context] = queue
        try:
            await ws.send(json.dumps({"text": " ", "context_id": context}))
            await ws.send(json.dumps({"text": text + " ", "context_id": context}))
            await ws.send(json.dumps({"context_id": context, "flush": True}))
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, EngineError):
                    raise item
                yield item
        finally:
            del self._contexts[context]
            # Always closed: a socket holds at most 5 open contexts, and a finished one
            # stays open until closed. After a barge-in (or a failure) this also stops
            # its audio; what of it is still in flight is dropped by its id.
            with contextlib.suppress(websockets.WebSocketException, OSError):
                await ws.send(json.dumps({"context_id": context, "close_context": True}))

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(websockets.WebSocketException, OSError):
                await self._ws.send(json.dumps({"close_socket": True}))
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


def _message_failure(message: dict[str, Any]) -> EngineError:
    reason = str(message.get("error") or "error")[:60]
    if "quota" in reason or "rate" in reason or message.get("code") == 429:
        return EngineError(f"{PROVIDER}: {reason}", FailureKind.RATE_LIMIT)
    if "auth" in reason or "api_key" in reason:
        return EngineError(f"{PROVIDER}: {reason}", FailureKind.AUTH)
    return EngineError(f"{PROVIDER}: {reason}", FailureKind.SERVER)


def _close_failure(closed: websockets.ConnectionClosed) -> EngineError:
    code = closed.rcvd.code if closed.rcvd else 1006
    kind = FailureKind.SERVER if code in (1008, 1011) else FailureKind.DROPPED
    return EngineError(f"{PROVIDER}: the socket closed ({code})", kind)


def _unexpected(error: Exception) -> EngineError:
    return EngineError(f"{PROVIDER}: {type(error).__name__}")
