"""A local Amazon Polly: ``SynthesizeSpeech`` and ``DescribeVoices`` in REST-JSON.

Test infrastructure: it stands in for polly.<region>.amazonaws.com, which cannot be
reached from here, so the product is tested through the real boto3 client
(``endpoint_url=`` the fake's URL). The SigV4 signature is not checked; whether an
``Authorization`` header came is recorded. Audio is real speech
(tests/providers/speech.py), streamed with chunked transfer as Polly does; markers in the
text inject failures (tests/providers/faults.py).

Errors carry Polly's status, ``x-amzn-ErrorType: <Code>:<namespace>`` and
``{"message": ...}``, which botocore turns into ``client.exceptions.<Code>`` when the code
is in Polly's model (``ServiceUnavailableException`` and ``UnrecognizedClientException``
are not: they arrive as a plain ``ClientError`` with that code). As the real service does,
a request is refused when its text exceeds 6000 characters in all or 3000 billed
characters (the text outside SSML tags).
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from typing import Any

from aiohttp import web

from tests.providers.faults import Faults, stream_reply
from tests.providers.speech import speech_pcm, ulaw

CHUNK = 640
MAX_TOTAL_CHARS = 6000
MAX_BILLED_CHARS = 3000
_NAMESPACE = "http://internal.amazon.com/coral/com.amazonaws.tts/"

_ALL = ["generative", "long-form", "neural", "standard"]
_GNS = ["generative", "neural", "standard"]
_NS = ["neural", "standard"]
_N = ["neural"]
_S = ["standard"]

# Id, gender, language, language name, engines, additional languages.
_TABLE: list[tuple[str, str, str, str, list[str], list[str]]] = [
    ("Joanna", "Female", "en-US", "US English", _ALL, []),
    ("Matthew", "Male", "en-US", "US English", _ALL, []),
    ("Salli", "Female", "en-US", "US English", _GNS, []),
    ("Joey", "Male", "en-US", "US English", _NS, []),
    ("Ruth", "Female", "en-US", "US English", ["generative", "long-form", "neural"], []),
    ("Kevin", "Male", "en-US", "US English", _N, []),
    ("Amy", "Female", "en-GB", "British English", _GNS, []),
    ("Brian", "Male", "en-GB", "British English", _NS, []),
    ("Raveena", "Female", "en-IN", "Indian English", _S, []),
    ("Aditi", "Female", "en-IN", "Indian English", _S, ["hi-IN"]),
    ("Kajal", "Female", "en-IN", "Indian English", ["generative", "neural"], ["hi-IN"]),
    ("Lucia", "Female", "es-ES", "Castilian Spanish", _GNS, []),
    ("Enrique", "Male", "es-ES", "Castilian Spanish", _S, []),
    ("Lupe", "Female", "es-US", "US Spanish", _GNS, []),
    ("Miguel", "Male", "es-US", "US Spanish", _S, []),
    ("Lea", "Female", "fr-FR", "French", _GNS, []),
    ("Mathieu", "Male", "fr-FR", "French", _S, []),
    ("Vicki", "Female", "de-DE", "German", _GNS, []),
    ("Hans", "Male", "de-DE", "German", _S, []),
    ("Bianca", "Female", "it-IT", "Italian", _GNS, []),
    ("Giorgio", "Male", "it-IT", "Italian", _S, []),
    ("Camila", "Female", "pt-BR", "Brazilian Portuguese", _GNS, []),
    ("Ricardo", "Male", "pt-BR", "Brazilian Portuguese", _S, []),
    ("Kazuha", "Female", "ja-JP", "Japanese", _N, []),
    ("Takumi", "Male", "ja-JP", "Japanese", _NS, []),
    ("Mizuki", "Female", "ja-JP", "Japanese", _S, []),
    ("Seoyeon", "Female", "ko-KR", "Korean", _NS, []),
    ("Zhiyu", "Female", "cmn-CN", "Chinese Mandarin", _NS, []),
    ("Laura", "Female", "nl-NL", "Dutch", _N, []),
    ("Lotte", "Female", "nl-NL", "Dutch", _S, []),
    ("Hala", "Female", "ar-AE", "Gulf Arabic", _N, []),
]
VOICES: dict[str, dict[str, Any]] = {
    vid: {
        "Id": vid,
        "Name": vid,
        "Gender": gender,
        "LanguageCode": language,
        "LanguageName": language_name,
        "SupportedEngines": engines,
        **({"AdditionalLanguageCodes": extra} if extra else {}),
    }
    for vid, gender, language, language_name, engines, extra in _TABLE
}

# [fail N] -> (HTTP status, error code, message)
_FAILURES: dict[int, tuple[int, str, str]] = {
    401: (
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    ),
    429: (429, "ThrottlingException", "Rate exceeded"),
    500: (500, "ServiceFailureException", "An unknown condition has caused a service failure."),
    503: (503, "ServiceUnavailableException", "Service is unavailable."),
}
_FORMATS = {
    "pcm": ("audio/pcm", ("8000", "16000"), "16000"),
    "mulaw": ("audio/mulaw", ("8000",), "8000"),
}


class PollyError(Exception):
    """A refusal, answered the way Polly answers it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        return web.json_response(
            {"message": self.message},
            status=self.status,
            headers={"x-amzn-ErrorType": f"{self.code}:{_NAMESPACE}"},
        )


def _bad(code: str, message: str) -> PollyError:
    return PollyError(400, code, message)


def ssml_text(ssml: str) -> str:
    """The spoken text of an SSML document; InvalidSsmlException when malformed."""
    try:
        root = ET.fromstring(ssml)
    except ET.ParseError as exc:
        raise _bad("InvalidSsmlException", f"Invalid SSML request: {exc}") from exc
    if root.tag != "speak":
        raise _bad("InvalidSsmlException", "Invalid SSML request: the root must be <speak>.")
    return " ".join("".join(root.itertext()).split())


class FakePolly:
    """A local Polly on 127.0.0.1; see the module docstring.

    ``requests`` holds one dict per request: method, path, query, headers (without
    ``Authorization``), json, and ``authorization`` (whether the header was present) with
    ``access_key`` (the key id named in its Credential, never the secret).
    """

    def __init__(self, *, first_byte_ms: int = 0) -> None:
        self.first_byte_ms = first_byte_ms
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    def app(self) -> web.Application:
        """The aiohttp application (for a caller that runs it itself)."""
        app = web.Application()
        app.router.add_post("/v1/speech", self._speech)
        app.router.add_get("/v1/voices", self._voices)
        return app

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:``port`` (0 = any free one); return the base URL."""
        # handler_cancellation: a handler stalled on purpose ends when its client leaves.
        self._runner = web.AppRunner(
            self.app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        """Stop listening; stalled replies are cut."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body: Any = None
        if request.can_read_body:
            try:
                body = json.loads(await request.read())
            except (ValueError, UnicodeDecodeError):
                body = None
        auth = request.headers.get("Authorization")
        credential = auth.partition("Credential=")[2].split("/", 1)[0] if auth else None
        entry = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            "json": body,
            "authorization": auth is not None,
            "access_key": credential,
        }
        self.requests.append(entry)
        return entry

    async def _voices(self, request: web.Request) -> web.Response:
        await self._record(request)
        language = request.query.get("LanguageCode")
        engine = request.query.get("Engine")
        additional = request.query.get("IncludeAdditionalLanguageCodes") == "true"
        voices = [
            voice
            for voice in VOICES.values()
            if (
                language is None
                or voice["LanguageCode"] == language
                or (additional and language in voice.get("AdditionalLanguageCodes", []))
            )
            and (engine is None or engine in voice["SupportedEngines"])
        ]
        return web.json_response({"Voices": voices})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        entry = await self._record(request)
        try:
            text, faults, content_type, rate, mulaw = self._validate(entry["json"])
            await faults.first_byte_delay(self.first_byte_ms)
            if faults.fail is not None:
                status, code, message = _FAILURES.get(
                    faults.fail, (faults.fail, "ServiceFailureException", "Injected failure.")
                )
                raise PollyError(status, code, message)
        except PollyError as error:
            return error.response()
        pcm = await speech_pcm(text, rate)
        audio = ulaw(pcm) if mulaw else pcm
        headers = {"x-amzn-RequestCharacters": str(len(text))}
        return await stream_reply(
            request, audio, faults, content_type, self._closing, CHUNK, headers
        )

    def _validate(self, body: Any) -> tuple[str, Faults, str, int, bool]:
        """(text to speak, faults, content type, rate, mu-law?) or a PollyError."""
        if not isinstance(body, dict) or not isinstance(body.get("Text"), str):
            raise _bad("ValidationException", "1 validation error detected: Text is required.")
        voice = VOICES.get(str(body.get("VoiceId")))
        if voice is None:
            raise _bad(
                "ValidationException",
                f"1 validation error detected: Value '{body.get('VoiceId')}' at 'voiceId' "
                "failed to satisfy constraint: Member must satisfy enum value set.",
            )
        engine = body.get("Engine", "standard")
        if engine not in voice["SupportedEngines"]:
            raise _bad(
                "EngineNotSupportedException",
                "This engine is not compatible with the voice that you have designated.",
            )
        language = body.get("LanguageCode")
        if language is not None and language not in (
            voice["LanguageCode"],
            *voice.get("AdditionalLanguageCodes", []),
        ):
            raise _bad("LanguageNotSupportedException", f"{voice['Id']} does not speak {language}.")
        fmt = _FORMATS.get(str(body.get("OutputFormat")))
        if fmt is None:
            raise _bad("ValidationException", "This fake makes OutputFormat pcm and mulaw only.")
        content_type, rates, default_rate = fmt
        rate = body.get("SampleRate", default_rate)
        if rate not in rates:
            raise _bad("InvalidSampleRateException", f"Invalid sample rate: {rate}.")
        raw, faults = Faults.parse(body["Text"])
        text = ssml_text(raw) if body.get("TextType") == "ssml" else raw
        if len(body["Text"]) > MAX_TOTAL_CHARS or len(text) > MAX_BILLED_CHARS:
            raise _bad(
                "TextLengthExceededException",
                f"Maximum text length has been exceeded: {MAX_BILLED_CHARS} billed, "
                f"{MAX_TOTAL_CHARS} total characters.",
            )
        return text, faults, content_type, int(rate), content_type == "audio/mulaw"
