"""A local ElevenLabs: the HTTP text-to-speech API and the multi-stream-input websocket.

Test infrastructure: it stands in for api.elevenlabs.io, which cannot be reached from
here, so the product is tested through the real ``elevenlabs`` SDK (and a ``websockets``
client) with no internet. It answers with real speech (tests/providers/speech.py) and
injects failures from markers in the text (tests/providers/faults.py).

Where the real service's behaviour is not documented the fake picks a strict answer, so
that a client bug shows up here rather than in production: an unknown voice id is a 404
``voice_not_found``, an unknown model a 400 ``model_not_found``, and a missing or
non-PCM ``output_format`` (the real default is mp3, which this fake cannot make) a 400.
On the websocket, text is only synthesized on ``flush`` (the real service may also start
early once its chunk-length schedule fills); each flush ends with ``isFinal`` for its
context. After ``close_context`` at most one more audio chunk of that context is sent
(audio in flight, as live), then one ``isFinal`` for it: clients must drop by context id.
A keepalive (``"text": ""``) naming a context that is not open closes the socket 1008.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from tests.providers.faults import Faults, frames, stream_reply
from tests.providers.speech import speech_pcm, ulaw

CHUNK = 640  # bytes per streamed piece, HTTP and websocket alike
MAX_CONTEXTS = 5
KEY_HEADER = "xi-api-key"
VALID_KEY = web.RequestKey("valid_key", bool)  # set on each request by the middleware

#: The premade voices named in providers.md, plus the legacy Rachel (accepted, listed last).
VOICES: list[dict[str, Any]] = [
    {"voice_id": vid, "name": name, "category": "premade", "labels": labels}
    for vid, name, labels in [
        ("EXAVITQu4vr4xnSDxMaL", "Sarah", {"gender": "female", "accent": "american"}),
        ("JBFqnCBsd6RMkjVDRZzb", "George", {"gender": "male", "accent": "british"}),
        ("9BWtsMINqrJLrRacOk9x", "Aria", {"gender": "female", "accent": "american"}),
        ("FGY2WhTYpPnrIDTdsKH5", "Laura", {"gender": "female", "accent": "american"}),
        ("nPczCjzI2devNBz1zQrb", "Brian", {"gender": "male", "accent": "american"}),
        ("onwK4e9ZLuTAKqWW03F9", "Daniel", {"gender": "male", "accent": "british"}),
        ("21m00Tcm4TlvDq8ikWAM", "Rachel", {"gender": "female", "accent": "american"}),
    ]
]

MODELS: list[dict[str, Any]] = [
    {"model_id": mid, "name": name, "can_do_text_to_speech": True, "languages": []}
    for mid, name in [
        ("eleven_flash_v2_5", "Eleven Flash v2.5"),
        ("eleven_turbo_v2_5", "Eleven Turbo v2.5"),
        ("eleven_multilingual_v2", "Eleven Multilingual v2"),
        ("eleven_v3", "Eleven v3"),
        ("eleven_flash_v2", "Eleven Flash v2"),
        ("eleven_turbo_v2", "Eleven Turbo v2"),
        ("eleven_monolingual_v1", "Eleven English v1"),
    ]
]

# [fail N] -> (HTTP status, detail.status, message, websocket close code)
_FAILURES: dict[int, tuple[str, str, int]] = {
    401: ("invalid_api_key", "Invalid API key", 1008),
    429: (
        "too_many_concurrent_requests",
        "Too many concurrent requests for your subscription. Try again later.",
        1008,
    ),
    500: ("internal_server_error", "We are sorry, something went wrong.", 1011),
    503: ("service_unavailable", "The service is temporarily unavailable.", 1011),
}


def _failure(status: int) -> tuple[str, str, int]:
    return _FAILURES.get(status, ("error", f"Injected failure {status}", 1011))


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)


def parse_format(output_format: str | None) -> tuple[int, bool] | None:
    """``pcm_16000`` -> (16000, False); ``ulaw_8000`` -> (8000, True); else None."""
    codec, _, rate = (output_format or "").partition("_")
    if codec == "pcm" and rate in ("8000", "16000", "22050", "24000", "32000", "44100", "48000"):
        return int(rate), False
    if codec == "ulaw" and rate == "8000":
        return 8000, True
    return None


async def audio_for(text: str, fmt: tuple[int, bool]) -> bytes:
    """What the fake sends for ``text`` (markers already removed) in ``fmt``."""
    pcm = await speech_pcm(text, fmt[0])
    return ulaw(pcm) if fmt[1] else pcm


class FakeElevenLabs:
    """A local ElevenLabs on 127.0.0.1; see the module docstring.

    ``requests`` holds one dict per request (websocket handshakes included): method,
    path, url (path and query), query, headers (without the key) and json. ``api_keys``
    holds every ``xi-api-key`` value seen, ``ws_messages`` every websocket message
    received (parsed JSON), in order.
    """

    def __init__(
        self,
        *,
        api_key: str | Sequence[str] = "test-key",
        first_byte_ms: int = 0,
        voice_ids: Sequence[str] = (),
    ) -> None:
        self.valid_keys = {api_key} if isinstance(api_key, str) else set(api_key)
        self.first_byte_ms = first_byte_ms
        self.voice_ids = {v["voice_id"] for v in VOICES} | set(voice_ids)
        self.requests: list[dict[str, Any]] = []
        self.api_keys: list[str] = []
        self.ws_messages: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._closing = asyncio.Event()

    def app(self) -> web.Application:
        """The aiohttp application (for a caller that runs it itself)."""
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._speech)
        app.router.add_post("/v1/text-to-speech/{voice_id}", self._speech)
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._socket)
        app.router.add_get("/v1/voices", self._voices)
        app.router.add_get("/v2/voices", self._voices)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/user", self._user)
        return app

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:``port`` (0 = any free one); return the base URL."""
        # handler_cancellation: a handler stalled on purpose ends when its client leaves.
        self._runner = web.AppRunner(
            self.app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        """Stop listening; stalled replies end and open websockets are closed (1001)."""
        self._closing.set()
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- HTTP -------------------------------------------------------------------------

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Every request is recorded; a websocket refuses a bad key in its own protocol.
        request[VALID_KEY] = await self._record(request)
        if request[VALID_KEY] or request.path.endswith("/multi-stream-input"):
            return await handler(request)
        return _error(401, "invalid_api_key", "Invalid API key")

    async def _record(self, request: web.Request) -> bool:
        """Record the request; True when it carries a valid key."""
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                body = None
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "url": request.path_qs,
                "query": dict(request.query),
                "headers": {k: v for k, v in request.headers.items() if k.lower() != KEY_HEADER},
                "json": body,
            }
        )
        key = request.headers.get(KEY_HEADER)
        if key is not None:
            self.api_keys.append(key)
        return key in self.valid_keys

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = self.requests[-1]["json"]
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return web.json_response(
                {"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]},
                status=422,
            )
        voice_id = request.match_info["voice_id"]
        if voice_id not in self.voice_ids:
            return _error(
                404, "voice_not_found", f"A voice with voice_id {voice_id!r} was not found."
            )
        model = body.get("model_id")
        if model is not None and model not in {m["model_id"] for m in MODELS}:
            return _error(
                400,
                "model_not_found",
                f"An invalid ID has been received: {model!r}. Make sure to provide a correct one.",
            )
        fmt = parse_format(request.query.get("output_format"))
        if fmt is None:
            return _error(
                400,
                "unsupported_output_format",
                "This fake only makes pcm_<rate> and ulaw_8000 (the real default is mp3).",
            )
        text, faults = Faults.parse(body["text"])
        await faults.first_byte_delay(self.first_byte_ms)
        if faults.fail is not None:
            code, message, _ = _failure(faults.fail)
            return _error(faults.fail, code, message)
        audio = await audio_for(text, fmt)
        content_type = "audio/basic" if fmt[1] else "audio/pcm"
        if not request.path.endswith("/stream") and faults.limit is None:
            return web.Response(body=audio, content_type=content_type)
        return await stream_reply(request, audio, faults, content_type, self._closing, CHUNK)

    async def _voices(self, request: web.Request) -> web.Response:
        extra = {"has_more": False, "total_count": len(VOICES), "next_page_token": None}
        return web.json_response({"voices": VOICES, **(extra if "v2" in request.path else {})})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(MODELS)

    async def _user(self, request: web.Request) -> web.Response:
        subscription = {
            "tier": "creator",
            "character_count": 0,
            "character_limit": 100000,
            "status": "active",
            "can_extend_character_limit": False,
            "voice_limit": 30,
        }
        return web.json_response(
            {"user_id": "fake-user", "subscription": subscription, "is_new_user": False}
        )

    # -- multi-stream-input websocket ---------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        session = _Session(self, request, ws)
        try:
            if not request[VALID_KEY]:
                await session.fail(401)
            elif request.match_info["voice_id"] not in self.voice_ids:
                await session.error("voice_not_found", "Voice not found.", 1008)
            elif (fmt := parse_format(request.query.get("output_format"))) is None:
                await session.error("unsupported_output_format", "Use pcm_* or ulaw_8000.", 1008)
            else:
                session.fmt = fmt
                # Fractions are accepted (the real one takes whole seconds) for fast tests.
                await session.run(float(request.query.get("inactivity_timeout") or 20))
        finally:
            self._sockets.discard(ws)
            await session.stop()
        return ws


class _Context:
    """One context of a socket: its pending text, its queue of flushed texts, its task."""

    def __init__(self, context_id: str) -> None:
        self.id = context_id
        self.text = ""
        self.closed = False
        self.extra_sent = False  # closed contexts may still send one chunk in flight
        self.ended = asyncio.Event()  # set on close_context: ends a stall
        self.jobs: asyncio.Queue[str | None] = asyncio.Queue()


class _Session:
    """One multi-stream-input websocket."""

    def __init__(self, fake: FakeElevenLabs, request: web.Request, ws: web.WebSocketResponse):
        self.fake, self.request, self.ws = fake, request, ws
        self.fmt: tuple[int, bool] = (16000, False)
        self.contexts: dict[str, _Context] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._done = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if not self.ws.closed:
                try:
                    await self.ws.send_str(json.dumps(message))
                except ConnectionError:
                    self._done.set()  # the client went away

    async def error(self, error: str, message: str, code: int) -> None:
        await self.send({"message": message, "error": error, "code": code})
        await self.ws.close(code=code, message=error.encode())
        self._done.set()

    async def fail(self, status: int) -> None:
        error, message, code = _failure(status)
        await self.error(error, message, code)

    async def run(self, inactivity: float) -> None:
        """Serve the socket until the client, an error or a fault ends it."""
        receiver = asyncio.ensure_future(self._receive(inactivity))
        receiver.add_done_callback(lambda _: self._done.set())
        try:
            await self._done.wait()
        finally:
            receiver.cancel()

    async def _receive(self, inactivity: float) -> None:
        while not self.ws.closed:
            try:
                msg = await self.ws.receive(timeout=inactivity)
            except TimeoutError:
                await self.error(
                    "input_timeout_exceeded",
                    f"Have not received new text for {inactivity:g} seconds. Closing.",
                    1008,
                )
                return
            if msg.type != WSMsgType.TEXT:
                return  # close, error, or binary (not part of the protocol)
            try:
                message = json.loads(msg.data)
            except ValueError:
                await self.error("invalid_message", "Messages must be JSON.", 1008)
                return
            self.fake.ws_messages.append(message)
            if not await self._handle(message):
                return

    async def _handle(self, message: dict[str, Any]) -> bool:
        """Apply one client message; False once the socket is closing."""
        if message.get("close_socket"):
            await self.ws.close(code=1000)
            return False
        context_id = str(message.get("context_id") or "default")
        context = self.contexts.get(context_id)
        text = message.get("text")
        if message.get("close_context"):
            if context is not None:
                self._close_context(context)
            return True
        if context is None:
            if not isinstance(text, str):
                return True  # e.g. a flush for a context already closed: nothing to do
            if not text:  # a keepalive naming a context not open fails it (seen live)
                await self.error("context_not_found", f"Context {context_id} not found.", 1008)
                return False
            if len(self.contexts) >= MAX_CONTEXTS:
                await self.error(
                    "max_active_conversations",
                    f"Maximum of {MAX_CONTEXTS} active contexts per connection exceeded.",
                    1008,
                )
                return False
            context = self.contexts[context_id] = _Context(context_id)
            self.tasks.add(asyncio.ensure_future(self._speak_context(context)))
        if isinstance(text, str):
            context.text += text  # "" is a keepalive: nothing to add
        if message.get("flush"):
            context.jobs.put_nowait(context.text)
            context.text = ""
        return True

    def _close_context(self, context: _Context) -> None:
        # Queued flushes are dropped; the one in flight may still get one chunk out.
        context.closed = True
        context.ended.set()
        del self.contexts[context.id]
        while not context.jobs.empty():
            context.jobs.get_nowait()
        context.jobs.put_nowait(None)

    async def _speak_context(self, context: _Context) -> None:
        while (job := await context.jobs.get()) is not None:
            if not await self._speak(context, job):
                return
            if not context.closed:
                await self.send({"contextId": context.id, "isFinal": True})
        await self.send({"contextId": context.id, "isFinal": True})

    async def _speak(self, context: _Context, text: str) -> bool:
        """Send the audio of one flushed text; False when the socket is to end."""
        text, faults = Faults.parse(text)
        await faults.first_byte_delay(self.fake.first_byte_ms)
        if faults.fail is not None:
            await self.fail(faults.fail)
            return False
        audio = await audio_for(text, self.fmt) if text else b""
        for piece in frames(audio[: faults.limit], CHUNK):
            if context.closed:
                if context.extra_sent:
                    break
                context.extra_sent = True
            encoded = base64.b64encode(piece).decode()
            await self.send({"audio": encoded, "contextId": context.id, "isFinal": None})
            await asyncio.sleep(0)
        if faults.drop is not None:
            if self.request.transport is not None:
                self.request.transport.close()  # no close frame: the connection just ends
            self._done.set()
            return False
        if faults.stall is not None:
            await context.ended.wait()  # silent until the context or the socket ends
        return True

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if not self.ws.closed:
            await self.ws.close(code=1000)
