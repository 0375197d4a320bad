"""Every queue and every per-customer resource has a bound, and reaching one is a clear
refusal that changes nothing: queued says per session, sessions per worker and per
offline voice family, event streams per customer; the command stream is trimmed and call
locks expire unless refreshed.

A worker and an API of the test's own run on a private Redis, so limits can be small and
the API's creates can only reach that worker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.e2e.api_fixtures import Api, start_api, stop_api
from tests.e2e.conftest import CallFactory
from tests.e2e.processes import PRIVATE_REDIS_URL, WorkerProcess
from tests.e2e.test_api import create, post_create, wait_active
from tests.e2e.test_call_path import LONG
from worker.store import LOCK_TTL_MS, Keys

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def private_stack(
    redis: Redis, tmp_path: Path, name: str, api_env: dict[str, str], **worker_env: str
) -> AsyncIterator[tuple[WorkerProcess, Api]]:
    """A worker (``worker_env`` its limits) and an API, alone on the private Redis."""
    env = {"SPEAKING_REDIS_URL": PRIVATE_REDIS_URL}
    worker_id = f"{name}-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(worker_id, tmp_path / "worker.log", **worker_env, **env)
    await worker.start()
    try:
        api = await start_api(redis, tmp_path / "api.log", **api_env, **env)
        try:
            yield worker, api
        finally:
            await stop_api(api)
    finally:
        assert await worker.stop() == 0


@pytest.fixture
async def small(private_redis: Redis, tmp_path: Path) -> AsyncIterator[tuple[WorkerProcess, Api]]:
    """A worker with small limits and an API, alone on a private Redis."""
    async with private_stack(
        private_redis,
        tmp_path,
        "small",
        {"SPEAKING_API_MAX_EVENT_STREAMS_PER_CUSTOMER": "2"},
        SPEAKING_MAX_SESSIONS="1",
        SPEAKING_MAX_QUEUED_SAYS="3",
        SPEAKING_MAX_QUEUED_CHARS="600",
        SPEAKING_MAINTENANCE_INTERVAL_S="1",
    ) as stack:
        yield stack


@pytest.fixture
async def one_piper(
    private_redis: Redis, tmp_path: Path
) -> AsyncIterator[tuple[WorkerProcess, Api]]:
    """A worker whose piper voice serves one session at once (espeak-ng unbounded)."""
    async with private_stack(
        private_redis,
        tmp_path,
        "piper1",
        {},
        SPEAKING_OFFLINE_PIPER_SESSIONS="1",
        SPEAKING_OFFLINE_ESPEAK_SESSIONS="0",
    ) as stack:
        yield stack


async def test_a_full_offline_voice_family_refuses_a_create_until_a_session_stops(
    one_piper: tuple[WorkerProcess, Api], private_redis: Redis, call: CallFactory
) -> None:
    _, api = one_piper
    async with call() as first, call() as second:
        piper_id = (await create(api, first))["id"]  # en-US, no voice: piper
        await wait_active(api, piper_id)
        lock = f"speaking:reference:call:{second.caller_channel_id}"

        status, body = await post_create(api, second.caller_channel_id)
        assert status == 503 and body["error"]["code"] == "unavailable", body
        message = body["error"]["message"]
        assert "piper voices serve at most 1 sessions at once" in message, message
        assert "(1 in use)" in message and "espeak" in message
        # Nothing was created: no lock on the call, no record but the first session's.
        assert await private_redis.get(lock) is None
        assert [k async for k in private_redis.scan_iter("speaking:session:*")] == [
            f"speaking:session:{piper_id}".encode()
        ]

        # The other family is not full: an espeak voice is served on the same call.
        espeak_id = (await create(api, second, voice_id="espeak"))["id"]
        await wait_active(api, espeak_id)
        assert (await api.call("POST", f"/v1.0/speakings/{espeak_id}/stop"))[0] == 200

        # Once the piper session has stopped, piper takes a create again.
        assert (await api.call("POST", f"/v1.0/speakings/{piper_id}/stop"))[0] == 200
        again = (await create(api, second))["id"]
        await wait_active(api, again)
        assert (await api.call("POST", f"/v1.0/speakings/{again}/stop"))[0] == 200


async def test_queued_says_are_bounded_and_a_refusal_changes_nothing(
    small: tuple[WorkerProcess, Api], call: CallFactory
) -> None:
    _, api = small
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        await wait_active(api, speaking_id)
        path = f"/v1.0/speakings/{speaking_id}/say"
        for n in range(3):
            status, body = await api.call("POST", path, json={"text": f"Sentence {n}."})
            assert status == 200, body
        status, refused = await api.call("POST", path, json={"text": "One too many."})
        assert status == 429 and refused["error"]["code"] == "limit_exceeded", refused
        assert "at most 3 are allowed" in refused["error"]["message"]
        assert (await api.call("GET", f"/v1.0/speakings/{speaking_id}"))[1]["status"] == "active"
        # Characters count too (600 here): a flush empties the queue, then a long text is
        # refused for its length alone.
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/flush"))[0] == 200
        status, long = await api.call("POST", path, json={"text": LONG * 2})
        assert status == 429 and "characters" in long["error"]["message"], long
        status, fits = await api.call("POST", path, json={"text": "Short again."})
        assert status == 200, fits
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200


async def test_a_worker_at_capacity_refuses_a_create_as_unavailable(
    small: tuple[WorkerProcess, Api], call: CallFactory
) -> None:
    _, api = small
    async with call() as first, call() as second:
        speaking_id = (await create(api, first))["id"]
        status, body = await api.call(
            "POST",
            "/v1.0/speakings",
            json={
                "reference_type": "call",
                "reference_id": second.caller_channel_id,
                "language": "en-US",
            },
        )
        assert status == 503 and body["error"]["code"] == "unavailable", body
        assert "at capacity" in body["error"]["message"]
        assert "small-" not in body["error"]["message"]  # no worker or host names
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200


async def test_event_streams_are_bounded_per_customer_and_others_are_served(
    small: tuple[WorkerProcess, Api], call: CallFactory
) -> None:
    _, api = small
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        events = f"{api.base}/v1.0/speakings/{speaking_id}/events"
        async with contextlib.AsyncExitStack() as streams:
            http = await streams.enter_async_context(aiohttp.ClientSession())
            for _ in range(2):
                resp = await streams.enter_async_context(
                    http.get(events, params={"token": api.key})
                )
                assert resp.status == 200
            status, body = await api.call("GET", f"/v1.0/speakings/{speaking_id}/events")
            assert status == 429 and body["error"]["code"] == "limit_exceeded", body
            assert "at most 2" in body["error"]["message"]
            # The open streams starve nobody: the same customer's other requests, and
            # other customers' streams, are served.
            assert (await api.call("GET", f"/v1.0/speakings/{speaking_id}"))[0] == 200
            other_stream = await _status(http, events, api.other_key)
            assert other_stream == 404  # served (the session is not theirs), not refused
        status, _ = await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop")
        assert status == 200


async def _status(http: aiohttp.ClientSession, url: str, key: str) -> int:
    async with http.get(url, params={"token": key}) as resp:
        return resp.status


async def test_call_locks_expire_unless_refreshed_and_the_command_stream_is_trimmed(
    small: tuple[WorkerProcess, Api], private_redis: Redis, call: CallFactory
) -> None:
    worker, api = small
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        await wait_active(api, speaking_id)
        lock = f"speaking:reference:call:{c.caller_channel_id}"
        assert await private_redis.get(lock) == speaking_id.encode()
        ttl: Any = await private_redis.pttl(lock)
        assert 0 < ttl <= LOCK_TTL_MS  # refreshed each second by the owner's heartbeat
        for _ in range(5):  # commands for the stream to hold until it is trimmed
            assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/flush"))[0] == 200
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200
        assert await private_redis.get(lock) is None
    stream = Keys().commands(worker.worker_id)
    async with asyncio.timeout(10):
        # Polls: trimming is periodic (every second here) and announces nothing.
        while await private_redis.xlen(stream) > 1:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
