"""ElevenLabs through its SDK (``AsyncElevenLabs``): the HTTP stream, the base path.

The text of a say is known up front, so one streamed request per say over a warm, pooled
connection is as fast as the websocket (docs: first audio after the model's ~75 ms with
``eleven_flash_v2_5``). Audio is asked for at the call's rate (``pcm_8000`` /
``pcm_16000``), so nothing is resampled. ``prepare`` (while the session initiates)
opens a connection of the pool and checks the key, so a bad key refuses the session at
set-up rather than failing its first say. The key travels only in the ``xi-api-key``
header the SDK sets; it is never logged, never in a URL of ours, never in an error.

For deployments that feed text in pieces, ``mode=websocket`` uses the multi-stream-input
socket instead (worker/engines/elevenlabs_ws.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError

from worker.engines.base import EngineError, FailureKind, Synthesis, UnsupportedVoice, Voice
from worker.engines.elevenlabs_ws import ElevenLabsSocketSynthesis
from worker.engines.streams import guarded, http_failure
from worker.voices import ELEVENLABS, elevenlabs_voice

PROVIDER = "elevenlabs"
#: A connection idle longer than this is warmed again by ``prepare``.
WARM_FOR_S = 30.0
#: Connections per httpx pool. httpcore scans its whole pool for every request and every
#: read (measured: 100 concurrent streams in one pool cost 4.5 s of CPU, in pools of 10
#: 0.65 s), so the sessions are spread over several small pools.
POOL_SIZE = 16


@dataclass(frozen=True)
class ElevenLabsSettings:
    api_key: str
    base_url: str = "https://api.elevenlabs.io"
    model_id: str = "eleven_flash_v2_5"
    mode: str = "http"  # or "websocket"
    max_connections: int = 200


def describe(error: Exception) -> EngineError:
    """An SDK or transport failure as a customer-safe EngineError."""
    if isinstance(error, ApiError):
        return http_failure(PROVIDER, error.status_code or 0, _status_detail(error.body))
    if isinstance(error, httpx.TimeoutException):
        return EngineError(f"{PROVIDER}: the request timed out", FailureKind.TIMEOUT)
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        return EngineError(f"{PROVIDER}: the connection dropped mid-stream", FailureKind.DROPPED)
    if isinstance(error, httpx.TransportError):
        return EngineError(f"{PROVIDER}: could not be reached", FailureKind.SERVER)
    return EngineError(f"{PROVIDER}: {type(error).__name__}")


def _status_detail(body: object) -> str:
    """ElevenLabs' error status word (e.g. ``invalid_api_key``), never its free text."""
    if isinstance(body, dict) and isinstance(body.get("detail"), dict):
        status = body["detail"].get("status")
        if isinstance(status, str) and status.replace("_", "").isalnum():
            return status[:60]
    return ""


def language_code(language: str) -> str:
    """flash/turbo v2.5 take an ISO 639-1 code: ``ko-KR`` -> ``ko``."""
    return ELEVENLABS.locale_for(language)


class ElevenLabsEngine:
    """The ``elevenlabs`` provider: a few SDK clients, each with its own small connection
    pool, shared by the worker's sessions (each session keeps to one)."""

    name = PROVIDER

    def __init__(self, settings: ElevenLabsSettings) -> None:
        self.settings = settings
        self._shards = max(1, -(-settings.max_connections // POOL_SIZE))
        self._clients: list[AsyncElevenLabs] = []
        self._last_used = [0.0] * self._shards
        self._next = 0

    def client(self, shard: int) -> AsyncElevenLabs:
        if not self._clients:  # created in the loop that uses them
            self._clients = [self._new_client() for _ in range(self._shards)]
        return self._clients[shard]

    def _new_client(self) -> AsyncElevenLabs:
        size = min(POOL_SIZE, self.settings.max_connections)
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, connect=5.0),
            limits=httpx.Limits(
                max_connections=size, max_keepalive_connections=size, keepalive_expiry=120.0
            ),
        )
        return AsyncElevenLabs(
            base_url=self.settings.base_url, api_key=self.settings.api_key, httpx_client=http
        )

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        language_code(language)  # raises UnsupportedVoice with the languages it speaks
        if voice_id and not voice_id.replace("_", "").replace("-", "").isalnum():
            raise UnsupportedVoice(f"{PROVIDER}: voice_id {voice_id[:40]!r} is not a voice id")
        return Voice(voice_id or elevenlabs_voice(language), language)

    def open(self, voice: Voice, rate: int) -> Synthesis:
        if self.settings.mode == "websocket":
            settings = self.settings
            return ElevenLabsSocketSynthesis(
                settings.base_url, settings.api_key, settings.model_id, voice, rate
            )
        shard, self._next = self._next, (self._next + 1) % self._shards
        return ElevenLabsSynthesis(self, shard, voice, rate)

    async def list_voices(self) -> list[dict[str, object]]:
        """The account's voices (for GET /speakings/voices): any speaks every language."""
        reply = await self.client(0).voices.get_all()
        languages = list(ELEVENLABS.languages)
        return [
            {"voice_id": v.voice_id, "name": v.name or v.voice_id, "languages": languages}
            for v in reply.voices
        ]

    async def warm(self, shard: int) -> None:
        """Open (or keep) a pooled connection, checking the key: a cheap GET /v1/user."""
        if time.monotonic() - self._last_used[shard] < WARM_FOR_S:
            return
        try:
            await self.client(shard).user.get()
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise describe(exc) from exc
        except httpx.HTTPError:
            return  # unreachable now: the first say will say so, per segment
        self._last_used[shard] = time.monotonic()

    def used(self, shard: int) -> None:
        self._last_used[shard] = time.monotonic()


class ElevenLabsSynthesis:
    """One session's ElevenLabs voice at the call's rate, over the shared pool."""

    provider = PROVIDER

    def __init__(self, engine: ElevenLabsEngine, shard: int, voice: Voice, rate: int) -> None:
        self._engine = engine
        self._shard = shard
        self.voice = voice
        self.rate = rate if rate in (8000, 16000, 22050, 24000) else 16000

    def split(self, text: str) -> list[str]:
        return [text]  # a say is at most 5,000 characters: one request

    async def prepare(self) -> None:
        await self._engine.warm(self._shard)

    def stream(self, text: str) -> AsyncIterator[bytes]:
        source = self._engine.client(self._shard).text_to_speech.stream(
            self.voice.voice_id,
            text=text,
            model_id=self._engine.settings.model_id,
            output_format=f"pcm_{self.rate}",
            language_code=language_code(self.voice.language),
            # chunk_size None: each network read as it arrives (the SDK's 1024 would hold
            # audio back until a block is full, and lose a partial one on a drop).
            request_options={"chunk_size": None, "max_retries": 0},
        )
        self._engine.used(self._shard)
        return guarded(source, PROVIDER, describe)

    async def close(self) -> None:
        return None  # the pool is the engine's
