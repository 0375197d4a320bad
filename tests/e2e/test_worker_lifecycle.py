"""However a worker ends, nothing it created survives in Asterisk: a clean shutdown
stops every session (reason shutdown); after a crash, the restarted worker marks
the dead sessions stopped (reason worker_lost) and sweeps what was left."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import INSTANCE, asterisk_ctl
from tests.e2e.conftest import CallFactory, our_leftovers
from tests.e2e.processes import WorkerProcess
from tests.e2e.test_call_path import LONG, say, start_session
from tests.telephony.ari import Ari
from worker.client import SpeakingClient

pytestmark = pytest.mark.e2e


async def test_sigterm_stops_every_session_and_cleans_asterisk(
    redis: Redis, call: CallFactory, ari: Ari, tmp_path: Path
) -> None:
    worker = WorkerProcess(f"term-{uuid.uuid4().hex[:8]}", tmp_path / "worker.log")
    await worker.start()
    client = SpeakingClient(redis, worker.worker_id)
    async with call() as first, call() as second:
        sessions = [await start_session(client, c) for c in (first, second)]
        await say(client, sessions[0], LONG)
        assert len(await our_leftovers(ari)) == 6  # 2 x (snoop + external media + bridge)
        assert await worker.stop(signal.SIGTERM) == 0
        assert await our_leftovers(ari) == []
        for speaking_id in sessions:
            stopped = await client.wait_event(speaking_id, "speaking_stopped")
            assert stopped["reason"] == "shutdown"
            assert (await client.session(speaking_id))["status"] == "stopped"
        flushed = await client.wait_event(sessions[0], "segment_flushed")
        assert flushed["reason"] == "shutdown"
    assert not worker.errors()


async def test_restart_after_a_crash_sweeps_what_the_dead_worker_left(
    redis: Redis, call: CallFactory, ari: Ari, tmp_path: Path
) -> None:
    worker_id = f"crash-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(worker_id, tmp_path / "before.log")
    await worker.start()
    client = SpeakingClient(redis, worker_id)
    async with call() as c:
        speaking_id = await start_session(client, c)
        assert await worker.stop(signal.SIGKILL) == -signal.SIGKILL
        assert len(await our_leftovers(ari)) == 3  # a crash cannot clean up...
        restarted = WorkerProcess(worker_id, tmp_path / "after.log")
        await restarted.start()
        assert await our_leftovers(ari) == []  # ...the restart does, before it is ready
        stopped = await client.wait_event(speaking_id, "speaking_stopped")
        assert stopped["reason"] == "worker_lost"
        # The call is free again: a new session on it works on the restarted worker.
        again = await start_session(client, c)
        assert (await client.send("stop", again))["ok"]
        assert await restarted.stop() == 0
    assert not restarted.errors()


async def test_asterisk_restart_stops_sessions_and_the_worker_reconnects(
    redis: Redis, call: CallFactory, ari: Ari, tmp_path: Path
) -> None:
    """Asterisk goes away under a live session: the worker's events websocket reconnects
    with backoff, it notices the call is gone, stops the session (reason hangup), and
    serves new calls on the restarted Asterisk."""
    worker = WorkerProcess(f"restart-{uuid.uuid4().hex[:8]}", tmp_path / "worker.log")
    await worker.start()
    client = SpeakingClient(redis, worker.worker_id)
    try:
        async with call() as c:
            speaking_id = await start_session(client, c)
            await asyncio.to_thread(asterisk_ctl, "stop", INSTANCE)
            await asyncio.to_thread(asterisk_ctl, "start", INSTANCE)
            stopped = await client.wait_event(speaking_id, "speaking_stopped", timeout_s=30)
        assert stopped["reason"] == "hangup"
        async with call() as c:
            again = await start_session(client, c)
            assert (await client.send("stop", again))["ok"]
    finally:
        assert await worker.stop() == 0
    assert any('"ari events connected"' in line for line in worker.lines[5:])
