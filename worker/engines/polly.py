"""Amazon Polly through boto3: ``synthesize_speech`` with ``OutputFormat=pcm`` at the
call's rate (``SampleRate`` is the string "8000"/"16000"), the neural engine where the
voice has it, SSML when the text is SSML (``<speak>...``).

boto3 blocks, so every call runs on this engine's own thread pool (never the loop, never
the default executor that piper uses), sized with its connection pool to the sessions.
The audio is read as it arrives (``read1``; fixed-size chunks would wait). A flush
closes the stream from the loop, which also frees a thread stuck on a stalled one, and
drops what was read. Credentials come from the standard AWS chain (environment, shared
files, instance role) or the settings; none at all means the provider is not configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions

from worker.engines.base import EngineError, FailureKind, Synthesis, UnsupportedVoice, Voice
from worker.engines.streams import guarded, http_failure
from worker.engines.threaded import iterate_generator_in_thread
from worker.segmentation import split_sentences
from worker.voices import POLLY

PROVIDER = "aws"
#: Polly bills at most 3,000 characters per request (6,000 with SSML tags).
MAX_REQUEST_CHARS = 3000
READ_BYTES = 16384


@dataclass(frozen=True)
class PollySettings:
    region: str = "us-east-1"
    endpoint_url: str = ""  # "" = AWS's; a local fake or proxy otherwise
    access_key_id: str = ""  # "" = the standard credential chain
    secret_access_key: str = ""
    max_connections: int = 64


def credentials_problem(settings: PollySettings) -> str | None:
    if settings.access_key_id and settings.secret_access_key:
        return None
    if boto3.Session().get_credentials() is None:
        return (
            "configure AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, "
            "or an instance role), or SPEAKING_AWS_ACCESS_KEY_ID/SPEAKING_AWS_SECRET_ACCESS_KEY"
        )
    return None


def describe(error: Exception) -> EngineError:
    if isinstance(error, botocore.exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", "Error"))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400))
        if code in (
            "InvalidSsmlException",
            "TextLengthExceededException",
            "SsmlMarksNotSupportedForTextTypeException",
        ):
            reason = str(error.response.get("Error", {}).get("Message", ""))[:160]
            return EngineError(f"{PROVIDER}: {code}: {reason}", FailureKind.INVALID)
        if code == "ThrottlingException":
            status = 429
        return http_failure(PROVIDER, status, code)
    if isinstance(
        error, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return EngineError(f"{PROVIDER}: the request timed out", FailureKind.TIMEOUT)
    if isinstance(
        error, botocore.exceptions.ResponseStreamingError | botocore.exceptions.IncompleteReadError
    ):
        return EngineError(f"{PROVIDER}: the connection dropped mid-stream", FailureKind.DROPPED)
    if isinstance(error, urllib3.exceptions.ProtocolError | urllib3.exceptions.DecodeError):
        return EngineError(f"{PROVIDER}: the connection dropped mid-stream", FailureKind.DROPPED)
    if isinstance(error, botocore.exceptions.EndpointConnectionError):
        return EngineError(f"{PROVIDER}: could not be reached", FailureKind.SERVER)
    if isinstance(error, OSError | ValueError):  # a stream closed under a blocked read
        return EngineError(f"{PROVIDER}: the connection dropped mid-stream", FailureKind.DROPPED)
    return EngineError(f"{PROVIDER}: {type(error).__name__}")


class PollyEngine:
    """The ``aws`` provider: one boto3 client and one thread pool per worker."""

    name = PROVIDER

    def __init__(self, settings: PollySettings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(settings.max_connections, thread_name_prefix="polly")
        options: dict[str, Any] = {"region_name": settings.region}
        if settings.endpoint_url:
            options["endpoint_url"] = settings.endpoint_url
        if settings.access_key_id:
            options["aws_access_key_id"] = settings.access_key_id
            options["aws_secret_access_key"] = settings.secret_access_key
        self.client = boto3.client(
            "polly",
            config=botocore.config.Config(
                max_pool_connections=settings.max_connections,
                connect_timeout=5,
                read_timeout=10,
                retries={"total_max_attempts": 1},  # a retry could repeat audio
            ),
            **options,
        )

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        locale = POLLY.locale_for(language)
        if voice_id and not voice_id.isalpha():
            raise UnsupportedVoice(f"{PROVIDER}: voice_id {voice_id[:40]!r} is not a Polly voice")
        return Voice(voice_id or POLLY.default_voice(language), locale)

    def open(self, voice: Voice, rate: int) -> Synthesis:
        return PollySynthesis(self, voice, rate)

    async def list_voices(self) -> list[dict[str, object]]:
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(self.executor, self.client.describe_voices)
        return [
            {
                "voice_id": v["Id"],
                "name": v.get("Name", v["Id"]),
                "languages": [v["LanguageCode"], *v.get("AdditionalLanguageCodes", [])],
                "engines": v.get("SupportedEngines", []),
            }
            for v in reply.get("Voices", [])
        ]


class PollySynthesis:
    provider = PROVIDER

    def __init__(self, engine: PollyEngine, voice: Voice, rate: int) -> None:
        self._engine = engine
        self.voice = voice
        self.rate = rate if rate in (8000, 16000) else 16000
        info = POLLY.info(voice.voice_id)
        self._neural = info is None or "neural" in info.engines

    def split(self, text: str) -> list[str]:
        if is_ssml(text) or len(text) <= MAX_REQUEST_CHARS:
            return [text]  # SSML cannot be cut; Polly refuses it if it is too long
        pieces: list[str] = []
        for sentence in split_sentences(text):
            if pieces and len(pieces[-1]) + 1 + len(sentence) <= MAX_REQUEST_CHARS:
                pieces[-1] += " " + sentence
            else:
                pieces.append(sentence)
        return pieces

    async def prepare(self) -> None:
        return None  # connections are pooled per worker; boto3 opens one on demand

    def stream(self, text: str) -> AsyncIterator[bytes]:
        return guarded(self._read(text), PROVIDER, describe)

    def _request(self, text: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "Text": text,
            "TextType": "ssml" if is_ssml(text) else "text",
            "VoiceId": self.voice.voice_id,
            "OutputFormat": "pcm",
            "SampleRate": str(self.rate),
            "LanguageCode": self.voice.language,
        }
        if self._neural:
            request["Engine"] = "neural"
        return request

    async def _read(self, text: str) -> AsyncIterator[bytes]:
        body: list[Any] = []

        def chunks() -> Iterator[bytes]:  # on the engine's thread
            reply = self._engine.client.synthesize_speech(**self._request(text))
            stream = reply["AudioStream"]
            body.append(stream)
            raw = stream._raw_stream  # urllib3's response under botocore's StreamingBody
            try:
                # read1: what has arrived, up to the size (iter_chunks would wait for whole
                # chunks: first audio later, and far more wake-ups of the loop).
                while chunk := raw.read1(READ_BYTES):
                    yield chunk
            finally:
                stream.close()

        source = iterate_generator_in_thread(chunks, executor=self._engine.executor)
        try:
            async for chunk in source:
                yield chunk
        finally:
            for stream in body:  # frees a thread blocked on a stalled stream at once
                with contextlib.suppress(Exception):
                    # urllib3's shutdown() wakes a read blocked on the socket (a plain close
                    # would leave it until the read timeout); it never blocks itself.
                    stream._raw_stream.shutdown()
            await source.aclose()

    async def close(self) -> None:
        return None


def is_ssml(text: str) -> bool:
    return text.lstrip().startswith("<speak")
