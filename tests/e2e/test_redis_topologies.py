"""The product on a distributed Redis: the two-machine scale-out on a real 3-primary Redis
Cluster, and a Sentinel failover in the middle of a call that loses no command.

Real parts throughout: Debian's redis-server in cluster and sentinel modes
(tests/e2e/redis_topologies.py), Asterisk, SIPp, the worker and API processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from tests.conftest import ARI_AUTH, ARI_URL, asterisk_ctl
from tests.e2e.api_fixtures import Api, start_api, stop_api
from tests.e2e.conftest import CallFactory, our_leftovers
from tests.e2e.processes import WorkerProcess
from tests.e2e.redis_topologies import CLUSTER_PORTS, keys_per_node, redis_cluster, redis_sentinel
from tests.e2e.test_api import create, sse_until, wait_active
from tests.e2e.test_scale_out import SECOND, SECOND_ARI, speak_on_both_machines
from tests.telephony.analysis import count_loud
from tests.telephony.ari import Ari
from worker.redis_retry import connect
from worker.store import GROUP, Keys

pytestmark = [pytest.mark.e2e, pytest.mark.deadline(150)]


async def _no_leftovers(ari_url: str) -> None:
    ari = Ari(ari_url, ARI_AUTH)
    try:
        assert await our_leftovers(ari) == []
    finally:
        await ari.close()


EVENT_SHARDS = 4


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[str, Redis]]:
    async with redis_cluster() as url:
        redis = connect(url, 16, 5.0)
        try:
            yield url, redis
        finally:
            await redis.aclose()


def _id_on_node(prefix: str, node: int) -> str:
    """A worker id whose hash tag (its commands, replies and results) lands on ``node``
    of the cluster (the slots redis-cli gives each of 3 primaries, in order)."""
    first, last = ((0, 5460), (5461, 10922), (10923, 16383))[node]
    while True:
        worker_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
        if first <= key_slot(worker_id.encode()) <= last:
            return worker_id


async def test_two_machines_share_a_redis_cluster(
    cluster: tuple[str, Redis], tmp_path: Path, call: CallFactory
) -> None:
    """Two workers beside two Asterisks and one API tier, all on the cluster: the scale-out
    scenario passes unchanged, the keys spread over the primaries (the two workers' ids
    are chosen to hash to the first and the last; which node holds a session's keys is
    left to chance, so a third node holding none is no failure), each worker's
    transactions (reply + result + XACK) stayed in its hash slot, and the deployment-wide
    event stream, sharded, is written to its shards only."""
    url, redis = cluster
    await asyncio.to_thread(asterisk_ctl, "start", SECOND)
    env = {"SPEAKING_REDIS_URL": url, "SPEAKING_EVENT_SHARDS": str(EVENT_SHARDS)}
    here = WorkerProcess(_id_on_node("a", 0), tmp_path / "a.log", **env)
    there = WorkerProcess(
        _id_on_node("b", 2), tmp_path / "b.log", SPEAKING_ARI_URL=SECOND_ARI, **env
    )
    api: Api | None = None
    try:
        await here.start()
        await there.start()
        api = await start_api(redis, tmp_path / "api.log", SPEAKING_REDIS_URL=url)
        await speak_on_both_machines(api, redis, here, there, call)
        spread = await keys_per_node()
        assert set(spread) == set(CLUSTER_PORTS)
        assert spread[CLUSTER_PORTS[0]] > 0 and spread[CLUSTER_PORTS[2]] > 0, spread
        for worker in (here, there):  # every command answered and acknowledged
            pending = await redis.xpending(Keys().commands(worker.worker_id), GROUP)
            assert pending["pending"] == 0
        shards = Keys(event_shards=EVENT_SHARDS).event_streams()
        assert sum([await redis.xlen(s) for s in shards]) > 0
        assert not await redis.exists(Keys().events())
    finally:
        if api is not None:
            await stop_api(api)
        assert await here.stop() == 0, here.tail()
        assert await there.stop() == 0, there.tail()
        try:
            await _no_leftovers(SECOND_ARI)
        finally:
            await asyncio.to_thread(asterisk_ctl, "stop", SECOND)


SAYS_BEFORE = 4
SAYS_AFTER = 6


async def test_a_sentinel_failover_during_a_call_loses_no_command(
    tmp_path: Path, call: CallFactory
) -> None:
    """The worker and the API find the primary through three sentinels. With a session
    speaking, says keep coming while the sentinels promote the replica: every say is
    answered 200 with its own segment (none lost, none failed; a sender re-sends through
    the failover and the worker applies it once), the worker stays healthy, nothing is
    left pending, the caller hears speech, and stop tears the session down."""
    async with redis_sentinel() as sentinels:
        redis = connect(sentinels.url, 16, 5.0)
        worker = WorkerProcess(
            f"s-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log", SPEAKING_REDIS_URL=sentinels.url
        )
        api: Api | None = None
        try:
            await worker.start()
            api = await start_api(redis, tmp_path / "api.log", SPEAKING_REDIS_URL=sentinels.url)
            async with call() as c:
                speaking = await create(api, c, direction="in")
                sid = speaking["id"]
                await wait_active(api, sid)
                under_way, failed_over = asyncio.Event(), asyncio.Event()
                answers: list[tuple[int, dict[str, object]]] = []

                async def say(n: int) -> None:
                    answers.append(
                        await api.call(
                            "POST", f"/v1.0/speakings/{sid}/say", json={"text": f"Item {n}."}
                        )
                    )

                async def keep_saying() -> None:
                    for n in range(SAYS_BEFORE):
                        await say(n)
                        if n == 1:
                            under_way.set()
                    await failed_over.wait()
                    for n in range(SAYS_BEFORE, SAYS_BEFORE + SAYS_AFTER):
                        await say(n)

                # Says run while the failover does: the first ones before it starts, the
                # rest as soon as the sentinels agree (some meet the switch itself).
                sayer = asyncio.create_task(keep_saying())
                await under_way.wait()
                await sentinels.failover()
                failed_over.set()
                await sayer
                assert [status for status, _ in answers] == [200] * (SAYS_BEFORE + SAYS_AFTER), (
                    answers
                )
                segments = [str(body["segment_id"]) for _, body in answers]
                assert len(set(segments)) == len(segments)
                await sse_until(api, sid, "segment_finished", segment_id=segments[-1])
                assert (await worker.health())[0] == 200
                pending = await redis.xpending(Keys().commands(worker.worker_id), GROUP)
                assert pending["pending"] == 0
                status, stopped = await api.call("POST", f"/v1.0/speakings/{sid}/stop")
                assert status == 200 and stopped["status"] == "stopped", stopped
            assert count_loud(c.received("caller")) > 30
        finally:
            if api is not None:
                await stop_api(api)
            assert await worker.stop() == 0, worker.tail()
            await redis.aclose()
            await _no_leftovers(ARI_URL)
