"""Each cloud engine through its provider's real SDK against a local fake of that
provider's wire protocol (tests/providers: no provider is reachable from here): the audio
is the provider's, at the call's rate; every failure becomes a customer-safe
EngineError of the right kind; a flush stops the stream at once; no key leaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest

from tests.providers.fake_elevenlabs import FakeElevenLabs
from tests.providers.fake_gcp import FakeGcp
from tests.providers.fake_polly import FakePolly
from tests.providers.speech import speech_pcm
from worker.config import Settings
from worker.engines import streams
from worker.engines.base import EngineError, FailureKind, Synthesis, UnsupportedVoice, Voice
from worker.engines.configured import build_engines
from worker.engines.elevenlabs import ElevenLabsEngine, ElevenLabsSettings
from worker.engines.gcp import GcpEngine, GcpSettings
from worker.engines.polly import PollyEngine, PollySettings
from worker.model import Provider

KEY = "test-key-0123456789"
TEXT = "Good morning, and thank you for calling."


@pytest.fixture(autouse=True)
def quick_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled stream is declared stalled after 0.5 s here (3 s in production)."""
    monkeypatch.setattr(streams, "STALL_TIMEOUT_S", 0.5)
    monkeypatch.setattr(streams, "FIRST_BYTE_TIMEOUT_S", 2.0)


async def collect(synthesis: Synthesis, text: str) -> bytes:
    async with asyncio.timeout(15):
        return b"".join([chunk async for chunk in synthesis.stream(text)])


async def failure(synthesis: Synthesis, text: str) -> EngineError:
    with pytest.raises(EngineError) as caught:
        await collect(synthesis, text)
    return caught.value


# -- ElevenLabs ---------------------------------------------------------------------------


@pytest.fixture
async def eleven() -> AsyncIterator[FakeElevenLabs]:
    fake = FakeElevenLabs(api_key=KEY)
    fake.base_url = await fake.start()  # type: ignore[attr-defined]
    yield fake
    await fake.close()


def eleven_engine(fake: FakeElevenLabs, key: str = KEY, mode: str = "http") -> ElevenLabsEngine:
    base_url: str = fake.base_url  # type: ignore[attr-defined]
    return ElevenLabsEngine(ElevenLabsSettings(api_key=key, base_url=base_url, mode=mode))


@pytest.mark.parametrize("mode", ["http", "websocket"])
async def test_elevenlabs_speaks_at_the_calls_rate(eleven: FakeElevenLabs, mode: str) -> None:
    engine = eleven_engine(eleven, mode=mode)
    synthesis = engine.open(engine.resolve_voice("en-US", ""), 16000)
    await synthesis.prepare()
    assert synthesis.rate == 16000 and synthesis.voice.voice_id == "EXAVITQu4vr4xnSDxMaL"
    assert await collect(synthesis, TEXT) == await speech_pcm(TEXT, 16000)
    await synthesis.close()
    # The key went in the xi-api-key header only: never in a URL.
    assert KEY in eleven.api_keys
    assert all(KEY not in str(r.get("url", "")) for r in eleven.requests)


async def test_elevenlabs_refuses_a_bad_key_at_setup(eleven: FakeElevenLabs) -> None:
    engine = eleven_engine(eleven, key="wrong-secret-key")
    synthesis = engine.open(engine.resolve_voice("en-US", ""), 8000)
    with pytest.raises(EngineError) as caught:
        await synthesis.prepare()
    assert caught.value.kind is FailureKind.AUTH
    assert "HTTP 401" in str(caught.value) and "wrong-secret-key" not in str(caught.value)


@pytest.mark.parametrize(
    ("marker", "kind", "fragment"),
    [
        ("[fail 429]", FailureKind.RATE_LIMIT, "HTTP 429"),
        ("[fail 503]", FailureKind.SERVER, "HTTP 503"),
        ("[drop 3200]", FailureKind.DROPPED, "dropped"),
        ("[stall 1600]", FailureKind.STALLED, "stopped"),
    ],
)
async def test_elevenlabs_failures_say_why(
    eleven: FakeElevenLabs, marker: str, kind: FailureKind, fragment: str
) -> None:
    engine = eleven_engine(eleven)
    synthesis = engine.open(engine.resolve_voice("en-US", ""), 8000)
    error = await failure(synthesis, f"{marker} {TEXT}")
    assert error.kind is kind and fragment in str(error) and str(error).startswith("elevenlabs:")
    assert await collect(synthesis, TEXT)  # usable again at once


async def test_elevenlabs_websocket_barge_in_drops_the_closed_contexts_audio(
    eleven: FakeElevenLabs,
) -> None:
    engine = eleven_engine(eleven, mode="websocket")
    synthesis = engine.open(engine.resolve_voice("en-US", ""), 16000)
    await synthesis.prepare()
    stream = cast(AsyncGenerator[bytes], synthesis.stream("A long announcement, interrupted."))
    await anext(stream)
    await stream.aclose()  # barge-in: close_context on the same socket
    assert await collect(synthesis, TEXT) == await speech_pcm(TEXT, 16000)
    assert any(m.get("close_context") for m in eleven.ws_messages)
    await synthesis.close()


def test_elevenlabs_languages_and_voices() -> None:
    engine = ElevenLabsEngine(ElevenLabsSettings(api_key=KEY))
    assert engine.resolve_voice("en-GB", "").voice_id == "JBFqnCBsd6RMkjVDRZzb"
    assert engine.resolve_voice("ko-KR", "21m00Tcm4TlvDq8ikWAM").voice_id == "21m00Tcm4TlvDq8ikWAM"
    with pytest.raises(UnsupportedVoice, match="cannot speak 'sw-KE'; it speaks en, ja"):
        engine.resolve_voice("sw-KE", "")


# -- Google ---------------------------------------------------------------------------------


@pytest.fixture
async def google() -> AsyncIterator[GcpEngine]:
    fake = FakeGcp()
    address = await fake.start()
    yield GcpEngine(GcpSettings(endpoint=address, insecure=True))
    await fake.close()


@pytest.mark.parametrize("voice_id", ["en-US-Chirp3-HD-Charon", "en-US-Neural2-A"])
async def test_google_streams_chirp_and_parses_the_wav_of_the_others(
    google: GcpEngine, voice_id: str
) -> None:
    synthesis = google.open(google.resolve_voice("en-US", voice_id), 8000)
    await synthesis.prepare()
    assert await collect(synthesis, TEXT) == await speech_pcm(TEXT, 8000)


@pytest.mark.parametrize(
    ("marker", "kind"),
    [
        ("[fail 401]", FailureKind.AUTH),
        ("[fail 429]", FailureKind.RATE_LIMIT),
        ("[fail 503]", FailureKind.SERVER),
        ("[stall 1600]", FailureKind.STALLED),
    ],
)
async def test_google_failures_say_why(google: GcpEngine, marker: str, kind: FailureKind) -> None:
    synthesis = google.open(google.resolve_voice("en-US", ""), 16000)
    error = await failure(synthesis, f"{marker} {TEXT}")
    assert error.kind is kind and str(error).startswith("gcp:")


def test_google_splits_long_text_under_its_byte_limit() -> None:
    engine = GcpEngine(GcpSettings(endpoint="127.0.0.1:1", insecure=True))
    synthesis = engine.open(engine.resolve_voice("ko-KR", ""), 8000)
    text = "가나다라마바사. " * 500  # 4,500 characters, 15,000 bytes
    pieces = synthesis.split(text)
    assert len(pieces) >= 3 and all(len(p.encode()) <= 5000 for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    assert engine.resolve_voice("zh-CN", "").voice_id == "cmn-CN-Chirp3-HD-Charon"


# -- Polly ------------------------------------------------------------------------------------


@pytest.fixture
async def polly() -> AsyncIterator[PollyEngine]:
    fake = FakePolly()
    url = await fake.start()
    engine = PollyEngine(
        PollySettings(endpoint_url=url, access_key_id="AKIDTEST", secret_access_key="s3cr3t")
    )
    yield engine
    engine.executor.shutdown(wait=False, cancel_futures=True)
    await fake.close()


async def test_polly_speaks_pcm_text_and_ssml(polly: PollyEngine) -> None:
    synthesis = polly.open(polly.resolve_voice("en-US", ""), 16000)
    assert synthesis.voice.voice_id == "Joanna"
    assert await collect(synthesis, TEXT) == await speech_pcm(TEXT, 16000)
    assert await collect(synthesis, f"<speak>{TEXT}</speak>")


async def test_polly_names_a_malformed_ssml(polly: PollyEngine) -> None:
    synthesis = polly.open(polly.resolve_voice("en-US", ""), 8000)
    error = await failure(synthesis, "<speak>Hello <break time='1s'></speak>")
    assert error.kind is FailureKind.INVALID and "InvalidSsmlException" in str(error)


@pytest.mark.parametrize(
    ("marker", "kind"),
    [
        ("[fail 429]", FailureKind.RATE_LIMIT),
        ("[fail 500]", FailureKind.SERVER),
        ("[fail 401]", FailureKind.AUTH),
        ("[drop 3200]", FailureKind.DROPPED),
        ("[stall 1600]", FailureKind.STALLED),
    ],
)
async def test_polly_failures_say_why(polly: PollyEngine, marker: str, kind: FailureKind) -> None:
    synthesis = polly.open(polly.resolve_voice("en-US", ""), 8000)
    error = await failure(synthesis, f"{marker} {TEXT}")
    assert error.kind is kind and str(error).startswith("aws:") and "s3cr3t" not in str(error)


async def test_polly_flush_closes_a_stalled_stream_at_once(polly: PollyEngine) -> None:
    synthesis = polly.open(polly.resolve_voice("en-US", ""), 8000)
    stream = cast(AsyncGenerator[bytes], synthesis.stream(f"[stall 1600] {TEXT}"))
    await anext(stream)
    async with asyncio.timeout(1.0):
        await stream.aclose()
    assert await collect(synthesis, TEXT)  # a free thread and connection at once


# -- configuration ------------------------------------------------------------------------------


def test_providers_without_credentials_are_reported_with_how_to_configure_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("GOOGLE_APPLICATION_CREDENTIALS", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    registry = build_engines(Settings(), env={})
    assert registry.configured == ["offline"]
    assert "ELEVENLABS_API_KEY" in registry.unconfigured["elevenlabs"]
    assert "GOOGLE_APPLICATION_CREDENTIALS" in registry.unconfigured["gcp"]
    assert "AWS_ACCESS_KEY_ID" in registry.unconfigured["aws"]
    with pytest.raises(Exception, match="set ELEVENLABS_API_KEY"):
        registry.engine_for(Provider.ELEVENLABS)


def test_fallbacks_follow_the_primary_with_their_own_default_voice() -> None:
    settings = Settings(
        elevenlabs_api_key=KEY,
        gcp_endpoint="127.0.0.1:1",
        gcp_insecure=True,
        fallback_providers="gcp,offline",
    )
    registry = build_engines(settings, env={})
    _engine, voice = registry.resolve(Provider.ELEVENLABS, "de-DE", "")
    chain = registry.open(Provider.ELEVENLABS, voice, 16000)
    assert [s.provider for s in chain] == ["elevenlabs", "gcp", "offline"]
    assert chain[1].voice == Voice("de-DE-Chirp3-HD-Charon", "de-DE")


async def test_elevenlabs_websocket_closes_each_context_so_a_socket_serves_many_says(
    eleven: FakeElevenLabs,
) -> None:
    """A socket holds at most 5 open contexts: each say's context is closed when done."""
    engine = eleven_engine(eleven, mode="websocket")
    synthesis = engine.open(engine.resolve_voice("en-US", ""), 8000)
    await synthesis.prepare()
    for _ in range(8):
        assert await collect(synthesis, TEXT) == await speech_pcm(TEXT, 8000)
    await synthesis.close()
