"""Google Cloud Text-to-Speech through its SDK (``TextToSpeechAsyncClient``, gRPC).

Chirp 3 HD voices (the defaults) stream: ``streaming_synthesize``, one call per piece of
a say, its text sent in the first input and the request stream closed right after, so
the server's 5 s idle abort can never hit an open call. Other voices (WaveNet, Neural2,
Standard) use the unary ``synthesize_speech`` with LINEAR16 at the call's rate; the WAV
reply is parsed by its chunks (``wave``), never cut at a fixed 44 bytes. A flush cancels
the call (closing the stream cancels the RPC). The service limits input to 5,000 bytes,
so a long say (Korean, say) is split at sentence boundaries under that.

Credentials: the standard Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``
or the metadata server), or a service-account file given in the settings. ``endpoint``
with ``insecure=True`` points at a local fake or proxy (plain gRPC, no credentials).
"""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.api_core import exceptions as google_errors
from google.api_core.client_options import ClientOptions
from google.cloud import texttospeech_v1 as tts
from google.cloud.texttospeech_v1.services.text_to_speech.transports import (
    TextToSpeechGrpcAsyncIOTransport,
)

from worker.engines.base import EngineError, FailureKind, Synthesis, UnsupportedVoice, Voice
from worker.engines.streams import guarded, http_failure
from worker.segmentation import split_sentences
from worker.voices import GCP, gcp_streams

PROVIDER = "gcp"
MAX_INPUT_BYTES = 5000


@dataclass(frozen=True)
class GcpSettings:
    endpoint: str = ""  # host:port; "" = Google's
    insecure: bool = False  # plain gRPC to ``endpoint`` (a local fake or a proxy)
    credentials_file: str = ""  # a service-account JSON; "" = Application Default


def credentials_problem(settings: GcpSettings) -> str | None:
    """Why Google cannot be used (no credentials), or None."""
    if settings.insecure:
        return None
    if settings.credentials_file:
        return None
    try:
        import google.auth

        google.auth.default()
    except Exception:
        return (
            "set GOOGLE_APPLICATION_CREDENTIALS to a service-account file "
            "(or SPEAKING_GCP_CREDENTIALS_FILE)"
        )
    return None


_STATUS = {
    google_errors.Unauthenticated: 401,
    google_errors.PermissionDenied: 403,
    google_errors.ResourceExhausted: 429,
    google_errors.TooManyRequests: 429,
    google_errors.InvalidArgument: 400,
    google_errors.InternalServerError: 500,
    google_errors.ServiceUnavailable: 503,
    google_errors.Aborted: 503,
}


def describe(error: Exception) -> EngineError:
    if isinstance(error, google_errors.DeadlineExceeded):
        return EngineError(f"{PROVIDER}: the request timed out", FailureKind.TIMEOUT)
    if isinstance(error, google_errors.GoogleAPICallError):
        status = next((s for cls, s in _STATUS.items() if isinstance(error, cls)), 500)
        if status == 503 and "after" in str(error.message):
            return EngineError(f"{PROVIDER}: the stream broke off", FailureKind.DROPPED)
        return http_failure(PROVIDER, status, type(error).__name__)
    if isinstance(error, grpc.aio.AioRpcError):
        return EngineError(f"{PROVIDER}: {error.code().name}", FailureKind.SERVER)
    return EngineError(f"{PROVIDER}: {type(error).__name__}")


def wav_pcm(reply: bytes) -> bytes:
    """The samples of a WAV reply (any chunk layout), or the bytes themselves if raw."""
    if not reply.startswith(b"RIFF"):
        return reply
    with wave.open(io.BytesIO(reply)) as wav:
        frames: bytes = wav.readframes(wav.getnframes())
        return frames


class GcpEngine:
    """The ``gcp`` provider: one async client (one gRPC channel) per worker."""

    name = PROVIDER

    def __init__(self, settings: GcpSettings) -> None:
        self.settings = settings
        self._client: tts.TextToSpeechAsyncClient | None = None

    @property
    def client(self) -> tts.TextToSpeechAsyncClient:
        if self._client is None:  # created in the loop that uses it
            if self.settings.insecure:
                channel = grpc.aio.insecure_channel(self.settings.endpoint)
                transport = TextToSpeechGrpcAsyncIOTransport(channel=channel)
                self._client = tts.TextToSpeechAsyncClient(transport=transport)
            else:
                options = ClientOptions(
                    api_endpoint=self.settings.endpoint or None,
                    credentials_file=self.settings.credentials_file or None,
                )
                self._client = tts.TextToSpeechAsyncClient(client_options=options)
        return self._client

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        locale = GCP.locale_for(language)
        if voice_id and not voice_id.count("-") >= 2:
            raise UnsupportedVoice(
                f"{PROVIDER}: voice_id {voice_id[:40]!r} is not a Google voice name "
                "(like en-US-Chirp3-HD-Charon or en-US-Neural2-F)"
            )
        return Voice(voice_id or GCP.default_voice(language), locale)

    def open(self, voice: Voice, rate: int) -> Synthesis:
        return GcpSynthesis(self, voice, rate)

    async def list_voices(self) -> list[dict[str, object]]:
        reply = await self.client.list_voices()
        return [
            {
                "voice_id": v.name,
                "name": v.name,
                "languages": list(v.language_codes),
                **({"streaming": True} if gcp_streams(v.name) else {}),
            }
            for v in reply.voices
        ]


class GcpSynthesis:
    provider = PROVIDER

    def __init__(self, engine: GcpEngine, voice: Voice, rate: int) -> None:
        self._engine = engine
        self.voice = voice
        self.rate = rate

    def split(self, text: str) -> list[str]:
        if len(text.encode()) <= MAX_INPUT_BYTES:
            return [text]
        pieces: list[str] = []
        for sentence in split_sentences(text):
            if pieces and len((pieces[-1] + " " + sentence).encode()) <= MAX_INPUT_BYTES:
                pieces[-1] += " " + sentence
            else:
                pieces.extend(_cut(sentence))
        return pieces

    async def prepare(self) -> None:
        _ = self._engine.client  # opens the channel; gRPC connects on the first call

    def stream(self, text: str) -> AsyncIterator[bytes]:
        source = self._streaming(text) if gcp_streams(self.voice.voice_id) else self._unary(text)
        return guarded(source, PROVIDER, describe)

    def _selection(self) -> tts.VoiceSelectionParams:
        return tts.VoiceSelectionParams(language_code=self.voice.language, name=self.voice.voice_id)

    async def _unary(self, text: str) -> AsyncIterator[bytes]:
        reply = await self._engine.client.synthesize_speech(
            input=tts.SynthesisInput(text=text),
            voice=self._selection(),
            audio_config=tts.AudioConfig(
                audio_encoding=tts.AudioEncoding.LINEAR16, sample_rate_hertz=self.rate
            ),
        )
        yield wav_pcm(reply.audio_content)

    async def _streaming(self, text: str) -> AsyncIterator[bytes]:
        async def requests() -> AsyncIterator[tts.StreamingSynthesizeRequest]:
            config = tts.StreamingSynthesizeConfig(
                voice=self._selection(),
                streaming_audio_config=tts.StreamingAudioConfig(
                    audio_encoding=tts.AudioEncoding.PCM, sample_rate_hertz=self.rate
                ),
            )
            yield tts.StreamingSynthesizeRequest(streaming_config=config)
            yield tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=text))

        responses: Any = await self._engine.client.streaming_synthesize(requests=requests())
        try:
            async for response in responses:
                yield response.audio_content
        finally:
            cancel = getattr(responses, "cancel", None)
            if cancel is not None:  # a flush: the RPC stops now, not when collected
                cancel()

    async def close(self) -> None:
        return None


def _cut(sentence: str) -> list[str]:
    """A sentence longer than the byte limit, cut between characters under it."""
    pieces = [""]
    for char in sentence:
        if len((pieces[-1] + char).encode()) > MAX_INPUT_BYTES:
            pieces.append("")
        pieces[-1] += char
    return pieces
