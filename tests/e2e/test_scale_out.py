"""Two workers, each beside its own Asterisk, behind one API tier and one Redis: a
create reaches the worker whose Asterisk holds the call, and later commands reach the
worker that owns the session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import ARI_AUTH, SECOND_INSTANCE, asterisk_ctl
from tests.e2e.api_fixtures import Api
from tests.e2e.conftest import CallFactory, our_leftovers
from tests.e2e.processes import WorkerProcess
from tests.e2e.test_api import create, sse_until, wait_active
from tests.telephony.analysis import count_loud
from tests.telephony.ari import Ari
from worker.store import Keys

pytestmark = pytest.mark.e2e

SECOND = SECOND_INSTANCE  # Asterisk instance number of the second machine
SECOND_ARI = f"http://127.0.0.1:{8088 + SECOND}/ari"
SECOND_SIP = 5060 + 100 * SECOND


@pytest.fixture
async def second_worker(tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    """Asterisk instance 1 with a worker of its own."""
    await asyncio.to_thread(asterisk_ctl, "start", SECOND)
    worker = WorkerProcess(
        f"b-{uuid.uuid4().hex[:6]}", tmp_path / "worker-b.log", SPEAKING_ARI_URL=SECOND_ARI
    )
    try:
        await worker.start()
        yield worker
    finally:
        assert await worker.stop() == 0
        ari = Ari(SECOND_ARI, ARI_AUTH)
        try:
            assert await our_leftovers(ari) == []
        finally:
            await ari.close()
            await asyncio.to_thread(asterisk_ctl, "stop", SECOND)


async def test_commands_reach_the_worker_beside_the_call(
    api: Api,
    worker: WorkerProcess,
    second_worker: WorkerProcess,
    redis: Redis,
    call: CallFactory,
) -> None:
    await speak_on_both_machines(api, redis, worker, second_worker, call)


async def speak_on_both_machines(
    api: Api, redis: Redis, worker: WorkerProcess, second_worker: WorkerProcess, call: CallFactory
) -> None:
    """A call on each machine, a session on each through the one API: each is owned by
    the worker beside its call, speaks there, and only that call's caller hears it.
    (Also run on a Redis Cluster: tests/e2e/test_redis_topologies.py.)"""
    async with call() as here, call(sip_port=SECOND_SIP, ari_url=SECOND_ARI) as there:
        first = await create(api, here, direction="in")
        second = await create(api, there, direction="in")
        owners = {}
        for sid in (first["id"], second["id"]):
            raw = await redis.hget(Keys().session(sid), "worker_id")
            owners[sid] = raw.decode() if isinstance(raw, bytes) else str(raw)
        assert owners == {first["id"]: worker.worker_id, second["id"]: second_worker.worker_id}
        for speaking in (first, second):
            await wait_active(api, speaking["id"])
            status, said = await api.call(
                "POST",
                f"/v1.0/speakings/{speaking['id']}/say",
                json={"text": "Routed to the right machine."},
            )
            assert status == 200, said
            await sse_until(api, speaking["id"], "segment_finished", segment_id=said["segment_id"])
            assert (await api.call("POST", f"/v1.0/speakings/{speaking['id']}/stop"))[0] == 200
    for c in (here, there):
        assert count_loud(c.received("caller")) > 30
        assert count_loud(c.received("callee")) == 0


async def test_a_published_call_is_routed_to_its_worker_alone(
    api: Api,
    worker: WorkerProcess,
    second_worker: WorkerProcess,
    redis: Redis,
    call: CallFactory,
) -> None:
    """Each worker names itself in Redis as where its Asterisk's calls are (every 2 s,
    from its janitor's channel list). Once the second machine's call is published, a
    create goes to that machine's worker without asking the other: the first worker's
    command stream gets no ``locate`` for it."""
    async with call(sip_port=SECOND_SIP, ari_url=SECOND_ARI) as there:
        hint = Keys().call_location(there.caller_channel_id)
        async with asyncio.timeout(10):  # the janitor's next round; no event says it ran
            while await redis.get(hint) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert await redis.get(hint) == second_worker.worker_id.encode()
        speaking = await create(api, there, direction="in")
        owner = await redis.hget(Keys().session(speaking["id"]), "worker_id")
        assert owner == second_worker.worker_id.encode()
        asked: Any = await redis.xrange(Keys().commands(worker.worker_id))
        reference = there.caller_channel_id.encode()
        assert not [
            f
            for _, f in asked
            if f.get(b"type") == b"locate" and f.get(b"reference_id") == reference
        ]
        assert (await api.call("POST", f"/v1.0/speakings/{speaking['id']}/stop"))[0] == 200
