"""The fake providers (tests/providers) through each provider's real SDK, on loopback.

These check the fakes themselves: that the real clients accept their replies, that the
audio is the expected speech, and that each injected failure surfaces as the SDK's own
error. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import grpc
import httpx
import pytest
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError
from google.api_core import exceptions as google_errors
from google.cloud.texttospeech_v1 import TextToSpeechAsyncClient
from google.cloud.texttospeech_v1 import types as tts
from google.cloud.texttospeech_v1.services.text_to_speech.transports import (
    TextToSpeechGrpcAsyncIOTransport,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from tests.providers.fake_elevenlabs import FakeElevenLabs
from tests.providers.fake_gcp import FakeGcp
from tests.providers.fake_polly import FakePolly
from tests.providers.faults import Faults
from tests.providers.speech import speech_pcm, ulaw, wav_chunks

ROOT = Path(__file__).resolve().parents[2]
TEXT = "Good morning, and thank you for calling."
SARAH = "EXAVITQu4vr4xnSDxMaL"
CHIRP = "en-US-Chirp3-HD-Charon"
T = TypeVar("T")


def test_markers_are_parsed_and_removed() -> None:
    text, faults = Faults.parse("[slow 300] Hello [drop 3200] world. [fail 503]")
    assert text == "Hello world."
    assert faults == Faults(fail=503, drop=3200, stall=None, slow_ms=300)
    assert Faults.parse("plain")[1] == Faults()


# -- ElevenLabs ---------------------------------------------------------------------------


@pytest.fixture
async def eleven() -> AsyncIterator[tuple[FakeElevenLabs, str]]:
    fake = FakeElevenLabs()
    url = await fake.start()
    yield fake, url
    await fake.close()


async def sdk_stream(
    url: str, text: str, fmt: str = "pcm_16000", into: list[bytes] | None = None, **kw: Any
) -> list[bytes]:
    """Stream ``text`` through the SDK; chunks also land in ``into`` as they arrive."""
    client = AsyncElevenLabs(base_url=url, api_key=kw.pop("api_key", "test-key"), **kw)
    stream = client.text_to_speech.stream(
        voice_id=SARAH,
        text=text,
        model_id="eleven_flash_v2_5",
        output_format=fmt,
        # httpx keeps a partial chunk_size block when the stream breaks: 320 divides the
        # fault sizes, so what arrived before a drop is all seen.
        request_options={"chunk_size": 320},
    )
    chunks = [] if into is None else into
    async with asyncio.timeout(5):
        async for chunk in stream:
            chunks.append(chunk)
    return chunks


async def test_elevenlabs_stream_is_the_speech(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, url = eleven
    chunks = await sdk_stream(url, TEXT)
    assert b"".join(chunks) == await speech_pcm(TEXT, 16000)
    assert max(len(c) for c in chunks) <= 320
    assert fake.api_keys == ["test-key"]
    request = fake.requests[-1]
    assert request["path"] == f"/v1/text-to-speech/{SARAH}/stream"
    assert request["query"]["output_format"] == "pcm_16000"
    assert request["json"]["text"] == TEXT and request["json"]["model_id"] == "eleven_flash_v2_5"
    assert "test-key" not in request["url"] and "xi-api-key" not in request["headers"]
    ulaw_chunks = await sdk_stream(url, TEXT, "ulaw_8000")
    assert b"".join(ulaw_chunks) == ulaw(await speech_pcm(TEXT, 8000))


async def test_elevenlabs_errors(eleven: tuple[FakeElevenLabs, str]) -> None:
    _, url = eleven
    with pytest.raises(ApiError) as wrong_key:
        await sdk_stream(url, TEXT, api_key="wrong")
    assert wrong_key.value.status_code == 401
    assert wrong_key.value.body["detail"]["status"] == "invalid_api_key"
    with pytest.raises(ApiError) as throttled:
        await sdk_stream(url, f"[fail 429] {TEXT}")
    assert throttled.value.status_code == 429
    with pytest.raises(ApiError) as failed:
        await sdk_stream(url, f"[fail 503] {TEXT}")
    assert failed.value.status_code == 503


async def test_elevenlabs_drop_and_stall(eleven: tuple[FakeElevenLabs, str]) -> None:
    _, url = eleven
    got: list[bytes] = []
    with pytest.raises(httpx.RemoteProtocolError):
        await sdk_stream(url, f"{TEXT} [drop 3200]", into=got)
    assert len(b"".join(got)) == 3200
    got.clear()
    with pytest.raises(httpx.ReadTimeout):
        await sdk_stream(url, f"{TEXT} [stall 1600]", into=got, timeout=0.5)
    assert len(b"".join(got)) == 1600


async def test_elevenlabs_listings(eleven: tuple[FakeElevenLabs, str]) -> None:
    _, url = eleven
    client = AsyncElevenLabs(base_url=url, api_key="test-key")
    async with asyncio.timeout(5):
        voices = await client.voices.get_all()
        models = await client.models.list()
        user = await client.user.get()
        whole = client.text_to_speech.convert(voice_id=SARAH, text=TEXT, output_format="pcm_8000")
        audio = b"".join([chunk async for chunk in whole])
    assert {"Sarah", "George", "Aria", "Laura", "Brian", "Daniel"} <= {
        v.name for v in voices.voices
    }
    assert "eleven_flash_v2_5" in {m.model_id for m in models}
    assert user.subscription.tier == "creator"
    assert audio == await speech_pcm(TEXT, 8000)


def ws_url(url: str, **query: str) -> str:
    params = {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000", **query}
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url.replace('http', 'ws', 1)}/v1/text-to-speech/{SARAH}/multi-stream-input?{qs}"


async def until_final(ws: ClientConnection, context: str) -> bytes:
    """The audio of ``context`` up to its isFinal (other contexts' messages are dropped)."""
    audio = b""
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await ws.recv())
            if message.get("contextId") != context:
                continue
            if message.get("audio"):
                audio += base64.b64decode(message["audio"])
            if message.get("isFinal"):
                return audio


async def test_websocket_contexts(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, url = eleven
    async with connect(ws_url(url), additional_headers={"xi-api-key": "test-key"}) as ws:
        await ws.send(json.dumps({"text": " ", "context_id": "a"}))
        await ws.send(json.dumps({"text": TEXT + " ", "context_id": "a"}))
        await ws.send(json.dumps({"text": "", "context_id": "a"}))  # keepalive
        await ws.send(json.dumps({"context_id": "a", "flush": True}))
        assert await until_final(ws, "a") == await speech_pcm(TEXT, 16000)
        # Barge-in: close the context while it speaks, open another on the same socket.
        await ws.send(json.dumps({"text": TEXT, "context_id": "b", "flush": True}))
        await ws.send(json.dumps({"context_id": "b", "close_context": True}))
        await ws.send(json.dumps({"text": "Hello.", "context_id": "c", "flush": True}))
        assert await until_final(ws, "c") == await speech_pcm("Hello.", 16000)
        await ws.send(json.dumps({"close_socket": True}))
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
    assert ws.close_code == 1000
    assert fake.requests[-1]["headers"].get("xi-api-key") is None
    assert fake.ws_messages[0] == {"text": " ", "context_id": "a"}


async def expect_close(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None, str]:
    """Messages received until the server closes, then the close code and reason."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        try:
            while True:
                messages.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            pass
    return messages, ws.close_code, ws.close_reason or ""


async def test_websocket_limits_and_errors(eleven: tuple[FakeElevenLabs, str]) -> None:
    _, url = eleven
    headers = {"xi-api-key": "test-key"}
    async with connect(ws_url(url), additional_headers=headers) as ws:
        for n in range(6):
            await ws.send(json.dumps({"text": " ", "context_id": f"c{n}"}))
        messages, code, reason = await expect_close(ws)
    assert (code, reason) == (1008, "max_active_conversations")
    assert messages[-1]["error"] == "max_active_conversations"
    async with connect(ws_url(url, inactivity_timeout="0.3"), additional_headers=headers) as ws:
        messages, code, reason = await expect_close(ws)
    assert (code, reason, messages[-1]["code"]) == (1008, "input_timeout_exceeded", 1008)
    async with connect(ws_url(url), additional_headers={"xi-api-key": "nope"}) as ws:
        messages, code, _ = await expect_close(ws)
    assert code == 1008 and messages[-1]["error"] == "invalid_api_key"
    async with connect(ws_url(url), additional_headers=headers) as ws:
        await ws.send(json.dumps({"text": "[fail 500] Hi.", "context_id": "x", "flush": True}))
        messages, code, _ = await expect_close(ws)
    assert code == 1011 and messages[-1]["code"] == 1011


async def test_websocket_drop(eleven: tuple[FakeElevenLabs, str]) -> None:
    _, url = eleven
    async with connect(ws_url(url), additional_headers={"xi-api-key": "test-key"}) as ws:
        await ws.send(json.dumps({"text": f"{TEXT} [drop 3200]", "context_id": "a", "flush": True}))
        with pytest.raises(ConnectionClosedError):
            await until_final(ws, "a")
        assert ws.close_code == 1006  # no close frame: the TCP connection was cut


# -- Google Cloud TTS ---------------------------------------------------------------------


@pytest.fixture
async def gcp() -> AsyncIterator[tuple[FakeGcp, TextToSpeechAsyncClient]]:
    fake = FakeGcp(idle_timeout_s=0.3)
    address = await fake.start()
    channel = grpc.aio.insecure_channel(address)
    yield fake, TextToSpeechAsyncClient(transport=TextToSpeechGrpcAsyncIOTransport(channel=channel))
    await channel.close()
    await fake.close()


def unary(text: str, encoding: int, name: str = "en-US-Neural2-F") -> tts.SynthesizeSpeechRequest:
    return tts.SynthesizeSpeechRequest(
        input=tts.SynthesisInput(text=text),
        voice=tts.VoiceSelectionParams(language_code="en-US", name=name),
        audio_config=tts.AudioConfig(audio_encoding=encoding, sample_rate_hertz=8000),
    )


async def test_gcp_unary(gcp: tuple[FakeGcp, TextToSpeechAsyncClient]) -> None:
    fake, client = gcp
    async with asyncio.timeout(5):
        linear = await client.synthesize_speech(request=unary(TEXT, tts.AudioEncoding.LINEAR16))
        mulaw = await client.synthesize_speech(request=unary(TEXT, tts.AudioEncoding.MULAW))
        raw = await client.synthesize_speech(request=unary(TEXT, tts.AudioEncoding.PCM))
        voices = await client.list_voices(language_code="en-US")
    pcm = await speech_pcm(TEXT, 8000)
    assert wav_chunks(linear.audio_content)[b"data"] == pcm
    assert linear.audio_content[36:40] != b"data"  # not a plain 44-byte header
    assert wav_chunks(mulaw.audio_content)[b"data"] == ulaw(pcm)
    assert raw.audio_content == pcm
    names = {v.name for v in voices.voices}
    assert {CHIRP, "en-US-Neural2-F"} <= names and all(n.startswith("en-US") for n in names)
    assert fake.requests[0]["request"]["input"]["text"] == TEXT


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"[fail 401] {TEXT}", google_errors.Unauthenticated),
        (f"[fail 429] {TEXT}", google_errors.ResourceExhausted),
        (f"[fail 500] {TEXT}", google_errors.InternalServerError),
        (f"[fail 503] {TEXT}", google_errors.ServiceUnavailable),
        ("x" * 5001, google_errors.InvalidArgument),
    ],
)
async def test_gcp_unary_errors(
    gcp: tuple[FakeGcp, TextToSpeechAsyncClient], text: str, error: type[Exception]
) -> None:
    _, client = gcp
    with pytest.raises(error):
        async with asyncio.timeout(5):
            await client.synthesize_speech(request=unary(text, tts.AudioEncoding.LINEAR16))


async def stream(
    client: TextToSpeechAsyncClient, texts: list[str], name: str = CHIRP, hold: bool = False
) -> list[bytes]:
    """Stream ``texts``; with ``hold`` the request stream stays open (never half-closes)."""
    released = asyncio.Event()

    async def requests() -> AsyncIterator[tts.StreamingSynthesizeRequest]:
        audio = tts.StreamingAudioConfig(
            audio_encoding=tts.AudioEncoding.PCM, sample_rate_hertz=16000
        )
        voice = tts.VoiceSelectionParams(language_code="en-US", name=name)
        config = tts.StreamingSynthesizeConfig(voice=voice, streaming_audio_config=audio)
        yield tts.StreamingSynthesizeRequest(streaming_config=config)
        for text in texts:
            yield tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=text))
        if hold:
            await released.wait()

    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(5):
            async for reply in await client.streaming_synthesize(requests=requests()):
                chunks.append(reply.audio_content)
    finally:
        released.set()
    return chunks


async def test_gcp_streaming(gcp: tuple[FakeGcp, TextToSpeechAsyncClient]) -> None:
    fake, client = gcp
    chunks = await stream(client, [TEXT, "Hello."])
    assert b"".join(chunks) == await speech_pcm(TEXT, 16000) + await speech_pcm("Hello.", 16000)
    assert max(len(c) for c in chunks) == 640
    assert len(fake.requests[-1]["requests"]) == 3
    with pytest.raises(google_errors.InvalidArgument):
        await stream(client, [TEXT], name="en-US-Neural2-F")


async def test_gcp_streaming_faults(gcp: tuple[FakeGcp, TextToSpeechAsyncClient]) -> None:
    _, client = gcp
    with pytest.raises(google_errors.Aborted):
        await stream(client, ["Hi."], hold=True)  # idle for longer than 0.3 s
    with pytest.raises(google_errors.ServiceUnavailable):
        await stream(client, [f"{TEXT} [drop 3200]"])
    with pytest.raises(google_errors.ResourceExhausted):
        await stream(client, ["[fail 429] Hi."])


# -- Polly --------------------------------------------------------------------------------


@pytest.fixture
async def polly() -> AsyncIterator[tuple[FakePolly, Any]]:
    fake = FakePolly()
    url = await fake.start()
    client = boto3.client(
        "polly",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=2),
    )
    yield fake, client
    await fake.close()


async def in_thread(work: Callable[[], T]) -> T:
    async with asyncio.timeout(5):
        return await asyncio.to_thread(work)


def polly_read(client: Any, text: str, **kw: Any) -> tuple[str, list[bytes]]:
    params = {"VoiceId": "Joanna", "OutputFormat": "pcm", "SampleRate": "16000", **kw}
    reply = client.synthesize_speech(Text=text, **params)
    body = reply["AudioStream"]
    try:
        return reply["ContentType"], list(body.iter_chunks(320))
    finally:
        body.close()


async def test_polly_speech(polly: tuple[FakePolly, Any]) -> None:
    fake, client = polly
    content_type, chunks = await in_thread(lambda: polly_read(client, TEXT, Engine="neural"))
    assert content_type == "audio/pcm"
    assert b"".join(chunks) == await speech_pcm(TEXT, 16000)
    assert max(len(c) for c in chunks) <= 320
    assert fake.requests[-1]["authorization"] and fake.requests[-1]["access_key"] == "x"
    assert fake.requests[-1]["json"]["SampleRate"] == "16000"
    ssml = f"<speak>{TEXT} <break time='100ms'/></speak>"
    _, chunks = await in_thread(lambda: polly_read(client, ssml, TextType="ssml"))
    assert b"".join(chunks) == await speech_pcm(TEXT, 16000)
    mulaw = {"OutputFormat": "mulaw", "SampleRate": "8000"}
    content_type, chunks = await in_thread(lambda: polly_read(client, TEXT, **mulaw))
    assert b"".join(chunks) == ulaw(await speech_pcm(TEXT, 8000))
    voices = await in_thread(lambda: client.describe_voices(LanguageCode="en-US"))
    assert "Joanna" in {v["Id"] for v in voices["Voices"]}


@pytest.mark.parametrize(
    ("text", "kw", "code"),
    [
        ("<speak>Hello <break></speak>", {"TextType": "ssml"}, "InvalidSsmlException"),
        (f"[fail 429] {TEXT}", {}, "ThrottlingException"),
        (f"[fail 500] {TEXT}", {}, "ServiceFailureException"),
        (f"[fail 503] {TEXT}", {}, "ServiceUnavailableException"),
        (f"[fail 401] {TEXT}", {}, "UnrecognizedClientException"),
        (TEXT, {"SampleRate": "22050"}, "InvalidSampleRateException"),
        (TEXT, {"VoiceId": "Mizuki", "Engine": "neural"}, "EngineNotSupportedException"),
        ("x" * 3001, {}, "TextLengthExceededException"),
    ],
)
async def test_polly_errors(
    polly: tuple[FakePolly, Any], text: str, kw: dict[str, str], code: str
) -> None:
    _, client = polly
    with pytest.raises(botocore.exceptions.ClientError) as error:
        await in_thread(lambda: polly_read(client, text, **kw))
    assert error.value.response["Error"]["Code"] == code
    modeled = getattr(client.exceptions, code, None)
    if modeled is not None:  # what Polly's model names, botocore raises as its own class
        assert isinstance(error.value, modeled)


async def test_polly_drop_raises_while_reading(polly: tuple[FakePolly, Any]) -> None:
    _, client = polly
    with pytest.raises(botocore.exceptions.ResponseStreamingError):
        await in_thread(lambda: polly_read(client, f"{TEXT} [drop 3200]"))


# -- serve.py -----------------------------------------------------------------------------


async def test_serve_runs_all_three_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.providers.serve",
        "--elevenlabs-port", "0", "--gcp-port", "0", "--polly-port", "0", "--api-key", "k2",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):  # imports grpc, the SDKs and espeak: can be slow
            urls = json.loads(await process.stdout.readline())
        assert set(urls) == {"elevenlabs", "gcp", "polly"}
        assert await sdk_stream(urls["elevenlabs"], "Hi.", api_key="k2")
        async with grpc.aio.insecure_channel(urls["gcp"]) as channel:
            transport = TextToSpeechGrpcAsyncIOTransport(channel=channel)
            async with asyncio.timeout(5):
                voices = await TextToSpeechAsyncClient(transport=transport).list_voices()
        assert voices.voices
        async with httpx.AsyncClient() as http, asyncio.timeout(5):
            assert (await http.get(f"{urls['polly']}/v1/voices")).status_code == 200
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
