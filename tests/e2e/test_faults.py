"""Faults, injected on the real parts, that the worker and the API must survive: Redis
stopped and started again (with its data, and empty), the ARI connection cut, Asterisk
frozen during set-up and during teardown, and a worker killed and replaced. After each,
nothing is lost (commands answered, sessions stopped with a reason) and nothing of ours
is left in Asterisk (the ``no_leaks`` fixture checks after every test).

Each test prints what it measured (recovery times) as ``FAULT <name> <seconds>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import INSTANCE, asterisk_pid, frozen_asterisk, redis_ctl
from tests.e2e.api_fixtures import CUSTOMER, OTHER, Api, start_api, stop_api
from tests.e2e.conftest import CallFactory, create_fields, our_leftovers
from tests.e2e.processes import PRIVATE_REDIS_PORT, PRIVATE_REDIS_URL, WorkerProcess
from tests.e2e.test_api import wait_active
from tests.e2e.test_call_path import LONG, say, start_session
from tests.telephony.analysis import count_loud
from tests.telephony.ari import Ari, AriError
from tests.telephony.tcp_proxy import TcpProxy
from worker.api.auth import KeyStore
from worker.client import SpeakingClient
from worker.redis_retry import REDIS_OUTAGE

pytestmark = [pytest.mark.e2e, pytest.mark.deadline(150)]

OUTAGE_S = 10.0


def measured(name: str, seconds: float) -> None:
    print(f"FAULT {name} {seconds:.2f}")


async def wait_heartbeat(redis: Redis, worker_id: str, within_s: float) -> float:
    """Seconds until the worker's heartbeat in Redis is fresh (written after now). Polls:
    the heartbeat is a write to Redis, there is no event to wait for."""
    started = time.time()
    async with asyncio.timeout(within_s):
        while True:
            try:
                raw = await redis.hget("speaking:workers", worker_id)
            except REDIS_OUTAGE:  # still loading
                raw = None
            if raw is not None and json.loads(raw)["seen"] > started:
                return time.time() - started
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("keeps_data", [True, False], ids=["with-data", "empty"])
async def test_a_redis_outage_is_survived(
    private_redis: Redis, call: CallFactory, tmp_path: Path, keeps_data: bool
) -> None:
    """Redis stopped for 10 s mid-session, then started again with its data (AOF) or
    empty: both health checks say 503 meanwhile and the API answers 503 with its error
    body (never 500); afterwards the worker's heartbeat is fresh within 2 s, no
    background task died, the live session is stored again if Redis lost it, speaks,
    and a new session on another call works."""
    env = {"SPEAKING_REDIS_URL": PRIVATE_REDIS_URL}
    worker = WorkerProcess(f"redis-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log", **env)
    await worker.start()
    api = await start_api(private_redis, tmp_path / "api.log", **env)
    try:
        async with call() as first, call() as second:
            speaking_id = (await _api_create(api, first))["id"]
            await wait_active(api, speaking_id)

            await asyncio.to_thread(redis_ctl, "stop", PRIVATE_REDIS_PORT)
            body = await worker.wait_health(503, within_s=5)
            assert body["redis"] is False and body["ari"] is True
            status, problem = await api.call("GET", f"/v1.0/speakings/{speaking_id}")
            assert status == 503 and problem["error"]["code"] == "unavailable", problem
            assert "try again" in problem["error"]["message"]
            assert (await api.call("GET", "/healthz"))[0] == 503
            await asyncio.sleep(OUTAGE_S)  # the outage itself

            restart = ["--empty"] if not keeps_data else []
            await asyncio.to_thread(redis_ctl, "start", PRIVATE_REDIS_PORT, *restart)
            fresh_s = await wait_heartbeat(private_redis, worker.worker_id, within_s=5)
            measured(f"redis_restart_{'with_data' if keeps_data else 'empty'}_heartbeat", fresh_s)
            assert fresh_s < 2.0, fresh_s
            if not keeps_data:  # the API keys went with the data: provision them again
                await KeyStore(private_redis).add(CUSTOMER, api.key)
                await KeyStore(private_redis).add(OTHER, api.other_key)
            health = await worker.wait_health(200, within_s=5)
            assert health["task_deaths"] == 0 and health["dead_tasks"] == []

            # The live session is still there (stored again by the worker if Redis lost
            # it), and speaks.
            status, record = await _api_get_eventually(api, speaking_id)
            assert status == 200 and record["status"] == "active", record
            said_at = time.time()
            status, said = await api.call(
                "POST", f"/v1.0/speakings/{speaking_id}/say", json={"text": "Still here."}
            )
            assert status == 200, said
            client = SpeakingClient(private_redis, worker.worker_id)
            await client.wait_event(speaking_id, "segment_finished", segment_id=said["segment_id"])
            assert count_loud(first.received("caller"), start=said_at) > 10

            again = (await _api_create(api, second))["id"]
            await wait_active(api, again)
            for sid in (speaking_id, again):
                assert (await api.call("POST", f"/v1.0/speakings/{sid}/stop"))[0] == 200
    finally:
        await stop_api(api)
        assert await worker.stop() == 0
    assert not worker.errors(), worker.errors()


async def test_a_dropped_ari_connection_is_survived(
    redis: Redis, call: CallFactory, ari: Ari, tmp_path: Path
) -> None:
    """Every connection between the worker and ARI is reset and refused for a while; a
    call hangs up meanwhile. The worker's health says ARI is down, it reconnects by
    itself, stops the session whose call vanished (reason hangup), and the other one
    goes on speaking."""
    proxy = TcpProxy("127.0.0.1", 8088 + INSTANCE)
    await proxy.start()
    worker = WorkerProcess(
        f"drop-{uuid.uuid4().hex[:6]}",
        tmp_path / "worker.log",
        SPEAKING_ARI_URL=f"http://127.0.0.1:{proxy.port}/ari",
    )
    await worker.start()
    client = SpeakingClient(redis, worker.worker_id)
    try:
        async with call() as gone, call() as kept:
            lost = await start_session(client, gone)
            survivor = await start_session(client, kept)
            proxy.refusing = True
            assert proxy.drop() >= 1
            body = await worker.wait_health(503, within_s=10)
            assert body["ari"] is False
            await ari.hangup(gone.caller_channel_id)  # while the worker cannot see it
            proxy.refusing = False
            back = time.monotonic()
            await worker.wait_health(200, within_s=15)
            measured("ari_drop_reconnect", time.monotonic() - back)
            stopped = await client.wait_event(lost, "speaking_stopped", timeout_s=15)
            assert stopped["reason"] == "hangup"
            segment = await say(client, survivor, "The other call goes on.")
            await client.wait_event(survivor, "segment_finished", segment_id=segment)
            assert (await client.send("stop", survivor))["ok"]
        assert count_loud(kept.received("caller")) > 10
    finally:
        assert await worker.stop() == 0
        await proxy.close()


async def test_asterisk_frozen_during_setup(
    redis: Redis, worker: WorkerProcess, call: CallFactory
) -> None:
    """Asterisk is frozen (SIGSTOP) for 5 s while a create is being applied: the session
    ends up active, or stopped with a reason, and nothing leaks."""
    client = SpeakingClient(redis, worker.worker_id)
    async with call() as c:
        speaking_id = str(uuid.uuid4())
        freeze = asyncio.create_task(frozen_asterisk(5.0))
        reply = await client.command(
            "create", speaking_id, create_fields(c, direction="in"), timeout_s=30
        )
        await freeze
        if reply["ok"]:
            outcome = await _first_event(
                client, speaking_id, "speaking_started", "speaking_stopped"
            )
            if outcome["type"] == "speaking_stopped":
                assert outcome["reason"], outcome
            else:
                assert (await client.session(speaking_id))["status"] == "active"
                stop = await client.command("stop", speaking_id, {}, timeout_s=30)
                assert stop["ok"] and stop["speaking"]["status"] == "stopped"
        else:
            assert reply["error"]["code"] in ("unavailable", "not_found"), reply


async def test_asterisk_frozen_during_teardown(
    redis: Redis, worker: WorkerProcess, call: CallFactory
) -> None:
    """Asterisk is frozen for 5 s while a session is being stopped: the stop is answered
    once Asterisk has confirmed that every channel and the bridge are gone."""
    client = SpeakingClient(redis, worker.worker_id)
    async with call() as c:
        speaking_id = await start_session(client, c)
        await say(client, speaking_id, LONG)
        freeze = asyncio.create_task(frozen_asterisk(5.0))
        await asyncio.sleep(0.2)  # frozen now
        started = time.monotonic()
        stop = await client.command("stop", speaking_id, {}, timeout_s=30)
        await freeze
        measured("stop_through_5s_freeze", time.monotonic() - started)
        assert stop["ok"] and stop["speaking"]["status"] == "stopped", stop
        stopped = await client.wait_event(speaking_id, "speaking_stopped")
        assert stopped["reason"] == "stop"


async def test_a_killed_worker_is_replaced_under_a_new_id(
    redis: Redis, call: CallFactory, ari: Ari, tmp_path: Path
) -> None:
    """A worker is SIGKILLed mid-speech and a new one starts beside the same Asterisk
    under another worker id (a recreated container): the dead worker's session is
    stopped (worker_lost) and its channels removed within seconds, by the new worker."""
    old = WorkerProcess(f"old-{uuid.uuid4().hex[:6]}", tmp_path / "old.log")
    await old.start()
    client = SpeakingClient(redis, old.worker_id)
    async with call() as c:
        speaking_id = await start_session(client, c)
        await say(client, speaking_id, LONG)
        assert await old.stop(signal.SIGKILL) == -signal.SIGKILL
        new = WorkerProcess(f"new-{uuid.uuid4().hex[:6]}", tmp_path / "new.log")
        await new.start()
        ready = time.monotonic()
        try:
            stopped = await client.wait_event(speaking_id, "speaking_stopped", timeout_s=15)
            measured("new_id_worker_lost", time.monotonic() - ready)
            assert stopped["reason"] == "worker_lost"
            assert (await client.session(speaking_id))["status"] == "stopped"
            # The call is free again, on the new worker.
            again = await start_session(SpeakingClient(redis, new.worker_id), c)
            assert (await SpeakingClient(redis, new.worker_id).send("stop", again))["ok"]
        finally:
            assert await new.stop() == 0
    assert not new.errors(), new.errors()


async def test_a_dead_workers_session_with_nothing_left_is_stopped_by_a_live_worker(
    redis: Redis, call: CallFactory, ari: Ari, client: SpeakingClient, tmp_path: Path
) -> None:
    """A worker is SIGKILLed and everything its session had in Asterisk disappears too
    (as when Asterisk restarts with it): the session worker of this run, which never
    saw that session, stops it (worker_lost) once the dead worker's lease lapses, so the
    record does not stay active with nobody to answer for it."""
    old = WorkerProcess(f"gone-{uuid.uuid4().hex[:6]}", tmp_path / "gone.log")
    await old.start()
    dead = SpeakingClient(redis, old.worker_id)
    async with call() as c:
        speaking_id = await start_session(dead, c)
        assert await old.stop(signal.SIGKILL) == -signal.SIGKILL
        for resource in await our_leftovers(ari):  # what a restarted Asterisk would lose
            with contextlib.suppress(AriError):
                await ari.hangup(resource)
            with contextlib.suppress(AriError):
                await ari.request("DELETE", f"/bridges/{resource}")
        stopped = await client.wait_event(speaking_id, "speaking_stopped", timeout_s=15)
        assert stopped["reason"] == "worker_lost"
        assert (await client.session(speaking_id))["status"] == "stopped"


async def test_pending_commands_are_replayed_once_after_a_crash(
    redis: Redis, call: CallFactory, tmp_path: Path
) -> None:
    """A stop is read but cannot finish (Asterisk frozen) when the worker is SIGKILLed.
    Restarted under the same id, the worker stops the dead session (worker_lost) and
    answers the pending stop exactly once."""
    worker_id = f"replay-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(worker_id, tmp_path / "before.log")
    await worker.start()
    client = SpeakingClient(redis, worker_id)
    async with call() as c:
        speaking_id = await start_session(client, c)
        pid = asterisk_pid()
        stop_id = str(uuid.uuid4())
        os.kill(pid, signal.SIGSTOP)
        try:
            entry: Any = {"type": "stop", "command_id": stop_id, "speaking_id": speaking_id}
            await redis.xadd(client.keys.commands(worker_id), entry)
            await _until_pending(redis, client, worker_id, 1)
            assert await worker.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            os.kill(pid, signal.SIGCONT)
        restarted = WorkerProcess(worker_id, tmp_path / "after.log")
        started = time.monotonic()
        await restarted.start()
        try:
            reply = await client.reply(stop_id, timeout_s=15)
            measured("same_id_restart_to_replayed_stop", time.monotonic() - started)
            assert reply["ok"] and reply["speaking"]["status"] == "stopped"
            stopped = await client.wait_event(speaking_id, "speaking_stopped")
            assert stopped["reason"] == "worker_lost"
            await _until_pending(redis, client, worker_id, 0)
            assert await redis.llen(client.keys.reply(worker_id, stop_id)) == 0  # answered once
        finally:
            assert await restarted.stop() == 0


async def test_a_long_dead_workers_heartbeat_leaves_the_directory(
    redis: Redis, worker: WorkerProcess
) -> None:
    """A worker that died a day ago (no lease) left its heartbeat in ``speaking:workers``:
    the live worker's janitor drops it, and leaves one with a fresh heartbeat alone."""
    now = time.time()
    gone = {"worker_id": "gone-x", "tag": "0badc0de", "seen": now - 25 * 3600}
    fresh = {"worker_id": "fresh-x", "tag": "0badf00d", "seen": now + 30}
    directory = "speaking:workers"
    await redis.hset(directory, mapping={"gone-x": json.dumps(gone), "fresh-x": json.dumps(fresh)})
    try:
        async with asyncio.timeout(10):  # the janitor sweeps every 2 s; no event says it did
            while await redis.hexists(directory, "gone-x"):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert await redis.hexists(directory, "fresh-x")
    finally:
        await redis.hdel(directory, "gone-x", "fresh-x")


async def test_a_command_lost_without_an_error_is_sent_again(redis: Redis, tmp_path: Path) -> None:
    """A Sentinel failover can drop an entry the old primary took, with no error on
    either side (replication is asynchronous). Here the entry is deleted while the
    worker is frozen (SIGSTOP), before it could read it: the sender hears nothing, sends
    the command again under the same id after RESEND_AFTER_S, and the worker answers
    that delivery."""
    worker = WorkerProcess(f"lost-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log")
    await worker.start()
    try:
        assert worker.proc is not None
        client = SpeakingClient(redis, worker.worker_id)
        stream = client.keys.commands(worker.worker_id)
        command_id = str(uuid.uuid4())
        fields = {"command_id": command_id, "reference_type": "call", "reference_id": "none"}
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            asking = asyncio.create_task(
                client.command("locate", str(uuid.uuid4()), fields, timeout_s=8.0)
            )
            first: Any = await redis.xread({stream: "0"}, block=5000)
            [(_, [(entry_id, entry)])] = first
            assert entry[b"command_id"].decode() == command_id
            assert await redis.xdel(stream, entry_id) == 1  # gone with the old primary
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        reply = await asking
        assert reply["ok"] and reply["found"] is False, reply
        resent: Any = await redis.xrange(stream)
        assert [e[b"command_id"].decode() for _, e in resent] == [command_id]
    finally:
        assert await worker.stop() == 0, worker.tail()


async def test_a_second_process_with_a_live_worker_id_refuses_to_start(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    twin = WorkerProcess(worker.worker_id, tmp_path / "twin.log")
    await twin.launch()
    assert await twin.exited(within_s=20) == 1
    assert any("held by another live process" in line for line in twin.lines), twin.tail()
    status, _ = await worker.health()
    assert status == 200  # the live one is untouched


# -- helpers ------------------------------------------------------------------------------------


async def _api_create(api: Api, c: Any) -> dict[str, Any]:
    status, body = await api.call(
        "POST",
        "/v1.0/speakings",
        json={"reference_type": "call", "reference_id": c.caller_channel_id, "language": "en-US"},
    )
    assert status == 201, body
    return dict(body)


async def _api_get_eventually(api: Api, speaking_id: str) -> tuple[int, Any]:
    """GET the session, retrying while the API still answers 503 (Redis coming back)."""
    async with asyncio.timeout(10):
        while True:
            status, body = await api.call("GET", f"/v1.0/speakings/{speaking_id}")
            if status != 503:
                return status, body
            await asyncio.sleep(0.1)


async def _first_event(client: SpeakingClient, speaking_id: str, *kinds: str) -> dict[str, str]:
    async with asyncio.timeout(30):
        after = "0"
        while True:
            for entry_id, fields in await client.events(speaking_id, after):
                after = entry_id
                if fields["type"] in kinds:
                    return fields


async def _until_pending(redis: Redis, client: SpeakingClient, worker_id: str, count: int) -> None:
    """Until the worker's group has exactly ``count`` unacknowledged entries."""
    stream = client.keys.commands(worker_id)
    async with asyncio.timeout(10):
        # Polls: the consumer group's state has no notification to wait for.
        while (await redis.xpending(stream, "speaking-workers"))["pending"] != count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
