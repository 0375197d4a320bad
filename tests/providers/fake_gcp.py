"""A local Google Cloud Text-to-Speech: the ``google.cloud.texttospeech.v1`` gRPC service.

Test infrastructure: it stands in for texttospeech.googleapis.com, which cannot be
reached from here, so the product is tested through the real
``google-cloud-texttospeech`` client over an insecure loopback channel::

    TextToSpeechAsyncClient(transport=TextToSpeechGrpcAsyncIOTransport(
        channel=grpc.aio.insecure_channel(address)))

Messages are (de)serialized with the package's own types, so the bytes on the wire are
the real ones. Audio is real speech (tests/providers/speech.py); markers in the text
inject failures (tests/providers/faults.py) mapped to gRPC statuses: ``[fail 401]``
UNAUTHENTICATED, ``[fail 429]`` RESOURCE_EXHAUSTED, ``[fail 500]`` INTERNAL, ``[fail 503]``
UNAVAILABLE; ``[drop N]`` aborts with UNAVAILABLE after N bytes (a unary call has no
partial reply, so it just fails); ``[stall N]`` sends N bytes then hangs.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.cloud.texttospeech_v1 import types as tts

from tests.providers.faults import Faults, frames
from tests.providers.speech import speech_pcm, ulaw, ulaw_wav, wav

SERVICE = "google.cloud.texttospeech.v1.TextToSpeech"
CHUNK = 640
MAX_INPUT_BYTES = 5000
NATURAL_RATE = 24000
IDLE_MESSAGE = "Stream aborted due to long duration elapsed without input sent."

LOCALES: tuple[str, ...] = (
    "en-US", "en-GB", "es-ES", "fr-FR", "de-DE", "it-IT", "pt-BR", "ja-JP", "ko-KR", "cmn-CN",
    "hi-IN",
)  # fmt: skip
_CHIRP_FEMALE = "Aoede Kore Leda Zephyr Achernar Autonoe Callirrhoe Despina Erinome Gacrux"
_CHIRP_MALE = "Charon Fenrir Orus Puck Achird Algenib Algieba Alnilam Enceladus Iapetus"
_MALE, _FEMALE = int(tts.SsmlVoiceGender.MALE), int(tts.SsmlVoiceGender.FEMALE)
_LETTER_GENDER = {"A": _FEMALE, "B": _MALE, "C": _FEMALE, "D": _MALE}


def _voice_table() -> dict[str, tuple[str, int]]:
    """Voice name -> (locale, gender): Standard/Wavenet/Neural2 A-D and Chirp3-HD names."""
    table: dict[str, tuple[str, int]] = {}
    for locale in LOCALES:
        for family in ("Standard", "Wavenet", "Neural2"):
            for letter, gender in _LETTER_GENDER.items():
                table[f"{locale}-{family}-{letter}"] = (locale, gender)
        for names, gender in ((_CHIRP_FEMALE, _FEMALE), (_CHIRP_MALE, _MALE)):
            for name in names.split():
                table[f"{locale}-Chirp3-HD-{name}"] = (locale, gender)
    table["en-US-Neural2-F"] = ("en-US", _FEMALE)  # en-US has more letters than A-D
    table["en-US-Neural2-J"] = ("en-US", _MALE)
    return table


VOICES = _voice_table()

# [fail N] -> (status, details), in the words of the real service.
_FAILURES: dict[int, tuple[Any, str]] = {
    401: (
        grpc.StatusCode.UNAUTHENTICATED,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
    429: (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'.",
    ),
    500: (grpc.StatusCode.INTERNAL, "Internal error encountered."),
    503: (grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."),
}


class _Rejected(Exception):
    """A request the real service refuses: becomes a status on the call."""

    def __init__(self, code: Any, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


def _invalid(details: str) -> _Rejected:
    return _Rejected(grpc.StatusCode.INVALID_ARGUMENT, details)


def _failure(status: int) -> _Rejected:
    code, details = _FAILURES.get(status, (grpc.StatusCode.INTERNAL, f"Injected {status}."))
    return _Rejected(code, details)


def _check_length(text: str) -> None:
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise _invalid(
            f"Either `input.text` or `input.ssml` is longer than the limit of "
            f"{MAX_INPUT_BYTES} bytes. This limit is different from quotas."
        )


def resolve_voice(voice: tts.VoiceSelectionParams) -> str:
    """The voice name the service would use, or INVALID_ARGUMENT."""
    language = voice.language_code
    if voice.name:
        if voice.name not in VOICES:
            raise _invalid(f"Voice '{voice.name}' does not exist.")
        locale = VOICES[voice.name][0]
        if language and language.lower() != locale.lower():
            raise _invalid(
                f"Requested language code '{language}' doesn't match the voice "
                f"'{voice.name}'s language code '{locale}'."
            )
        return voice.name
    for name, (locale, gender) in VOICES.items():  # the server picks one
        if locale.lower() == language.lower() and voice.ssml_gender in (0, gender):
            return name
    raise _invalid(f"Voice for language '{language}' does not exist.")


def ssml_text(ssml: str) -> str:
    """The text of an SSML document, or INVALID_ARGUMENT when it is malformed."""
    try:
        root = ET.fromstring(ssml)
    except ET.ParseError as exc:
        raise _invalid(f"Invalid SSML: {exc}") from exc
    if root.tag.rsplit("}", 1)[-1] != "speak":
        raise _invalid("Invalid SSML: the root element must be <speak>.")
    return " ".join("".join(root.itertext()).split())


def _rate(requested: int) -> int:
    if requested == 0:
        return NATURAL_RATE
    if not 8000 <= requested <= 48000:
        raise _invalid(f"Invalid sample_rate_hertz {requested}.")
    return requested


class FakeGcp:
    """A local TextToSpeech gRPC service on 127.0.0.1; see the module docstring.

    ``requests`` holds one dict per call: ``method`` and ``metadata``, and ``request``
    (SynthesizeSpeech, ListVoices: the request as a dict) or ``requests`` (the list of
    StreamingSynthesize requests as dicts, growing while the call runs).
    ``idle_timeout_s`` is how long a stream may go without input before ABORTED.
    """

    def __init__(self, *, first_byte_ms: int = 0, idle_timeout_s: float = 5.0) -> None:
        self.first_byte_ms = first_byte_ms
        self.idle_timeout_s = idle_timeout_s
        self.requests: list[dict[str, Any]] = []
        self._server: Any = None

    def handler(self) -> Any:
        """The generic handler of the service (for a caller running its own server)."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
                    self._synthesize,
                    request_deserializer=tts.SynthesizeSpeechRequest.deserialize,
                    response_serializer=tts.SynthesizeSpeechResponse.serialize,
                ),
                "StreamingSynthesize": grpc.stream_stream_rpc_method_handler(
                    self._streaming,
                    request_deserializer=tts.StreamingSynthesizeRequest.deserialize,
                    response_serializer=tts.StreamingSynthesizeResponse.serialize,
                ),
                "ListVoices": grpc.unary_unary_rpc_method_handler(
                    self._list_voices,
                    request_deserializer=tts.ListVoicesRequest.deserialize,
                    response_serializer=tts.ListVoicesResponse.serialize,
                ),
            },
        )

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:``port`` (0 = any free one); return ``"127.0.0.1:port"``."""
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((self.handler(),))
        bound = self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()
        return f"127.0.0.1:{bound}"

    async def close(self) -> None:
        """Stop the server; calls still running (stalled ones too) are cancelled."""
        if self._server is not None:
            await self._server.stop(grace=0.2)
            self._server = None

    def _record(self, method: str, context: Any, **fields: Any) -> dict[str, Any]:
        metadata = {k: v for k, v in (context.invocation_metadata() or ())}
        entry = {"method": method, "metadata": metadata, **fields}
        self.requests.append(entry)
        return entry

    async def _list_voices(self, request: tts.ListVoicesRequest, context: Any) -> Any:
        self._record("ListVoices", context, request=tts.ListVoicesRequest.to_dict(request))
        wanted = request.language_code.lower()
        voices = [
            tts.Voice(
                language_codes=[locale],
                name=name,
                ssml_gender=gender,
                natural_sample_rate_hertz=NATURAL_RATE,
            )
            for name, (locale, gender) in VOICES.items()
            if not wanted or f"{locale.lower()}-".startswith(f"{wanted}-")
        ]
        return tts.ListVoicesResponse(voices=voices)

    async def _synthesize(self, request: tts.SynthesizeSpeechRequest, context: Any) -> Any:
        self._record(
            "SynthesizeSpeech", context, request=tts.SynthesizeSpeechRequest.to_dict(request)
        )
        try:
            return await self._synthesize_reply(request)
        except _Rejected as rejected:
            await context.abort(rejected.code, rejected.details)

    async def _synthesize_reply(self, request: tts.SynthesizeSpeechRequest) -> Any:
        source = tts.SynthesisInput.pb(request.input).WhichOneof("input_source")
        if source not in ("text", "ssml", "markup"):
            raise _invalid("Either input.text or input.ssml must be set.")
        raw: str = getattr(request.input, source)
        _check_length(raw)
        raw, faults = Faults.parse(raw)
        text = ssml_text(raw) if source == "ssml" else raw
        resolve_voice(request.voice)
        config = request.audio_config
        encoding = config.audio_encoding
        if encoding == tts.AudioEncoding.AUDIO_ENCODING_UNSPECIFIED:
            raise _invalid("AudioConfig audio_encoding is required.")
        if encoding not in (tts.AudioEncoding.LINEAR16, tts.AudioEncoding.MULAW, 7):
            raise _Rejected(grpc.StatusCode.UNIMPLEMENTED, "This fake makes LINEAR16/MULAW/PCM.")
        rate = _rate(config.sample_rate_hertz)
        await faults.first_byte_delay(self.first_byte_ms)
        if faults.fail is not None:
            raise _failure(faults.fail)
        if faults.drop is not None:
            raise _failure(503)
        if faults.stall is not None:
            await asyncio.Future()  # hangs until the client's deadline or cancel
        pcm = await speech_pcm(text, rate)
        if encoding == tts.AudioEncoding.LINEAR16:
            audio = wav(pcm, rate)
        elif encoding == tts.AudioEncoding.MULAW:
            audio = ulaw_wav(ulaw(pcm), rate)
        else:  # PCM (7): no header
            audio = pcm
        return tts.SynthesizeSpeechResponse(audio_content=audio)

    async def _streaming(
        self, request_iterator: AsyncIterator[tts.StreamingSynthesizeRequest], context: Any
    ) -> AsyncIterator[Any]:
        received: list[dict[str, Any]] = []
        self._record("StreamingSynthesize", context, requests=received)
        # Read on a task of its own, so that "no input for idle_timeout_s" can be timed.
        inbox: asyncio.Queue[tts.StreamingSynthesizeRequest | None] = asyncio.Queue()

        async def read() -> None:
            async for item in request_iterator:
                received.append(tts.StreamingSynthesizeRequest.to_dict(item))
                inbox.put_nowait(item)
            inbox.put_nowait(None)  # the client half-closed

        reader = asyncio.ensure_future(read())
        try:
            async for reply in self._stream_replies(inbox):
                yield reply
        except _Rejected as rejected:
            await context.abort(rejected.code, rejected.details)
        finally:
            reader.cancel()

    async def _next(
        self, inbox: asyncio.Queue[tts.StreamingSynthesizeRequest | None]
    ) -> tts.StreamingSynthesizeRequest | None:
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                return await inbox.get()
        except TimeoutError:
            raise _Rejected(grpc.StatusCode.ABORTED, IDLE_MESSAGE) from None

    async def _stream_replies(
        self, inbox: asyncio.Queue[tts.StreamingSynthesizeRequest | None]
    ) -> AsyncIterator[Any]:
        first = await self._next(inbox)
        if first is None:
            return
        if tts.StreamingSynthesizeRequest.pb(first).WhichOneof("streaming_request") != (
            "streaming_config"
        ):
            raise _invalid("The first request must contain only streaming_config.")
        config = first.streaming_config
        name = resolve_voice(config.voice)
        if "Chirp3-HD" not in name and "Chirp-HD" not in name:
            raise _invalid(f"Voice '{name}' does not support streaming synthesis.")
        encoding = config.streaming_audio_config.audio_encoding
        if encoding not in (tts.AudioEncoding.PCM, tts.AudioEncoding.MULAW):
            raise _invalid(
                "Streaming supports PCM, ALAW, MULAW and OGG_OPUS (this fake: PCM, MULAW)."
            )
        rate = _rate(config.streaming_audio_config.sample_rate_hertz)
        first_byte = True
        while (item := await self._next(inbox)) is not None:
            if tts.StreamingSynthesizeRequest.pb(item).WhichOneof("streaming_request") != "input":
                raise _invalid("Only the first request may contain streaming_config.")
            _check_length(item.input.text)
            text, faults = Faults.parse(item.input.text)
            if first_byte:
                await faults.first_byte_delay(self.first_byte_ms)
                first_byte = False
            elif faults.slow_ms:
                await faults.first_byte_delay(0)
            if faults.fail is not None:
                raise _failure(faults.fail)
            pcm = await speech_pcm(text, rate) if text else b""
            audio = ulaw(pcm) if encoding == tts.AudioEncoding.MULAW else pcm
            for piece in frames(audio[: faults.limit], CHUNK):
                yield tts.StreamingSynthesizeResponse(audio_content=piece)
            if faults.drop is not None:
                raise _failure(503)
            if faults.stall is not None:
                await asyncio.Future()  # hangs until the client cancels
