"""Fixtures for end-to-end tests: a real worker process, a Redis client of its
contract, SIPp calls, and a check that nothing of ours is left in Asterisk."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import ARI_AUTH, ARI_URL, redis_ctl
from tests.e2e.processes import (
    PRIVATE_REDIS_PORT,
    PRIVATE_REDIS_URL,
    REDIS_CONNECT_TIMEOUT_S,
    REDIS_SOCKET_TIMEOUT_S,
    REDIS_URL,
    SIP_PORT,
    WorkerProcess,
)
from tests.telephony.analysis import write_wav
from tests.telephony.ari import Ari, AriEvents
from tests.telephony.conference import Conference, ConferenceService, Kind
from tests.telephony.sipp import TwoLegCall, two_leg_call
from worker.client import SpeakingClient


@pytest.fixture(scope="session")
async def worker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(
        f"test-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("worker") / "worker.log"
    )
    await process.start()
    yield process
    code = await process.stop()
    assert code == 0, "worker did not exit cleanly on SIGTERM:\n" + process.tail()
    assert not process.errors(), "worker logged errors:\n" + "".join(process.errors())
    assert not any(ARI_AUTH[1] in line for line in process.lines), "a secret reached the logs"


@pytest.fixture
async def private_redis() -> AsyncIterator[Redis]:
    """A Redis of the test's own, started empty: for tests that stop it, or that need a
    worker and an API alone together (the API routes a create to any worker that finds
    the call, and the session's worker would find it too)."""
    await asyncio.to_thread(redis_ctl, "start", PRIVATE_REDIS_PORT, "--empty")
    client = Redis.from_url(
        PRIVATE_REDIS_URL,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
    )
    try:
        yield client
    finally:
        await client.aclose()
        await asyncio.to_thread(redis_ctl, "stop", PRIVATE_REDIS_PORT)


@pytest.fixture(scope="session")
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(
        REDIS_URL,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
    )
    yield client
    await client.aclose()


@pytest.fixture
def client(redis: Redis, worker: WorkerProcess) -> SpeakingClient:
    return SpeakingClient(redis, worker.worker_id)


@pytest.fixture
async def ari() -> AsyncIterator[Ari]:
    client = Ari(ARI_URL, ARI_AUTH)
    yield client
    await client.close()


async def our_leftovers(ari: Ari) -> list[str]:
    """Channels and bridges created by the worker (ids ``speaking-...``) and Local
    channels (the worker's way into ConfBridge rooms) still in Asterisk."""
    channels = [
        c["id"]
        for c in await ari.channels()
        if c["id"].startswith("speaking-") or c.get("name", "").startswith("Local/")
    ]
    bridges = [b["id"] for b in await ari.bridges() if b["id"].startswith("speaking-")]
    return channels + bridges


@pytest.fixture(autouse=True)
async def no_leaks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After every e2e test: nothing the worker created is left in Asterisk. A session
    ended by the call's hangup is torn down just after the test's call closes, so this
    allows the worker a moment (the ARI events of that teardown are not ours to watch)."""
    yield
    if request.node.get_closest_marker("e2e") is None:
        return
    client = Ari(ARI_URL, ARI_AUTH)
    try:
        left = await our_leftovers(client)
        for _ in range(60):
            if not left:
                break
            await asyncio.sleep(0.05)
            left = await our_leftovers(client)
        assert left == []
    finally:
        await client.close()


CallFactory = Callable[..., AbstractAsyncContextManager[TwoLegCall]]


@pytest.fixture
def call(tmp_path: Path, harness_events: AriEvents) -> CallFactory:
    """``async with call(codec="ulaw", duration_s=30) as c`` places a two-leg SIPp call,
    watched through the session's harness app (a call on another Asterisk, given by
    ``ari_url``, opens an app of its own)."""

    def place(**kwargs: Any) -> AbstractAsyncContextManager[TwoLegCall]:
        options: dict[str, Any] = {
            "sip_port": SIP_PORT,
            "ari_url": ARI_URL,
            "ari_auth": ARI_AUTH,
            "workdir": tmp_path,
            "duration_s": 30.0,
        }
        options |= kwargs
        if options["ari_url"] == ARI_URL:
            options["events"] = harness_events
        return two_leg_call(**options)

    return place


def create_fields(call: TwoLegCall, **overrides: str) -> dict[str, str]:
    return {
        "reference_type": "call",
        "reference_id": call.caller_channel_id,
        "language": "en-US",
        "provider": "offline",
        "voice_id": "espeak",
        "customer_id": "cust-1",
    } | overrides


# The API tier's fixture lives beside its helpers; importing it here makes it visible to
# every e2e test module.
from tests.e2e.api_fixtures import api  # noqa: E402, F401
from tests.e2e.provider_stack import fakes, stack  # noqa: E402, F401


@pytest.fixture(scope="module")
async def service(harness_events: AriEvents) -> AsyncIterator[ConferenceService]:
    """The ARI conference service, one long-lived app for the module."""
    ari = Ari(ARI_URL, ARI_AUTH)
    svc = ConferenceService(ari)
    await svc.start()
    yield svc
    await svc.close()
    await ari.close()


#: ``conference(kind, **options)``: a room of either kind, closed when the block ends.
ConferenceFactory = Callable[..., AbstractAsyncContextManager[Conference]]


@pytest.fixture
def conference(
    harness_events: AriEvents, service: ConferenceService, tmp_path: Path
) -> ConferenceFactory:
    @asynccontextmanager
    async def make(kind: Kind, **kwargs: Any) -> AsyncIterator[Conference]:
        conf = Conference(
            kind,
            harness_events,
            tmp_path,
            sip_port=SIP_PORT,
            service=service if kind == "ari" else None,
            **kwargs,
        )
        try:
            yield conf
        finally:
            await conf.close()
            for who in conf.participants:  # what each one heard, for a human to listen to
                write_wav(tmp_path / f"{kind}-{who.number}.wav", who.received())

    return make
