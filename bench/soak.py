"""Chaos soak: real calls, random commands through the public API, random faults.

For ``--minutes`` (default 2), ``--calls`` SIPp calls each get random creates, says,
flushes, stops, deletes and hangups through the API (every request with an
Idempotency-Key, so the soak knows each command's id), while faults are injected at
random: Redis restarted (keeping its data), the worker SIGKILLed and restarted, every
ARI connection of the worker reset, Asterisk frozen (SIGSTOP) for a few seconds.

Then it lets the system settle and checks, printing the figures and writing
bench/results/soak.json:

* no channel or bridge of ours is left in Asterisk once the sessions are stopped, and
  no call lock of a stopped session is left in Redis;
* every session is stopped with a reason, or active and answering a say;
* every command that reached a worker was answered, and none more than once (each has
  its stored result, none is still pending, no reply list holds two answers);
* no API answer was a 500, and no background task of a worker died.

    python -m bench.soak [--minutes 2] [--calls 4] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import platform
import random
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from tests.conftest import (
    ARI_AUTH,
    ARI_URL,
    INSTANCE,
    REDIS_PORT,
    bring_up,
    frozen_asterisk,
    redis_ctl,
)
from tests.e2e.api_fixtures import CUSTOMER, Api, start_api, stop_api
from tests.e2e.processes import SIP_PORT, WorkerProcess
from tests.telephony.ari import Ari, AriError, AriEvents
from tests.telephony.sipp import TwoLegCall, two_leg_call
from tests.telephony.tcp_proxy import TcpProxy
from worker.api.speakings import idempotent_command_id
from worker.redis_retry import REDIS_OUTAGE, connect
from worker.store import Keys

RESULTS = Path(__file__).parent / "results" / "soak.json"
SOAK_REDIS_PORT = REDIS_PORT + 13  # in the lane's block of Redis ports (tests/lane.py)
SOAK_REDIS_URL = f"redis://127.0.0.1:{SOAK_REDIS_PORT}/0"
TEXTS = ["Hello there.", "Your call is important to us.", "One moment, please. Thank you."]


@dataclass
class Soak:
    """Everything the soak drives and what it saw."""

    api: Api
    redis: Redis
    ari: Ari
    events: AriEvents
    proxy: TcpProxy
    workdir: Path
    rng: random.Random
    worker: WorkerProcess
    statuses: dict[str, int] = field(default_factory=dict)  # "op status" -> count
    commands: list[str] = field(default_factory=list)  # command ids sent via the API
    sessions: set[str] = field(default_factory=set)
    faults: dict[str, int] = field(default_factory=dict)
    task_deaths: int = 0
    worker_restarts: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # around worker restarts
    idle: int = 0  # slots done with their commands (their call still up)
    all_idle: asyncio.Event = field(default_factory=asyncio.Event)
    checked: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def call_api(self, op: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        key = uuid.uuid4().hex
        self.commands.append(idempotent_command_id(CUSTOMER, key))
        try:
            async with asyncio.timeout(20):
                status, body = await self.api.call(
                    method, path, headers={"Idempotency-Key": key}, **kw
                )
        except (TimeoutError, OSError):
            status, body = 0, None
        label = f"{op} {status}"
        self.statuses[label] = self.statuses.get(label, 0) + 1
        return status, body


async def drive_slot(soak: Soak, slot: int, until: float) -> None:
    """One call at a time in this slot, with random commands; a hangup places a new call."""
    while time.monotonic() < until:
        try:
            async with two_leg_call(
                sip_port=SIP_PORT,
                workdir=soak.workdir / f"slot{slot}",
                duration_s=max(30.0, until - time.monotonic() + 60),
                events=soak.events,
            ) as call:
                await drive_call(soak, call, until)
                if time.monotonic() >= until:  # the last call stays up through the checks
                    await done_driving(soak)
                    return
        except (TimeoutError, OSError, RuntimeError) as exc:  # a call failed to come up
            label = f"call-failed {type(exc).__name__}"
            soak.statuses[label] = soak.statuses.get(label, 0) + 1
            await asyncio.sleep(1)
    await done_driving(soak)


async def done_driving(soak: Soak) -> None:
    """This slot sends nothing more; wait (the call still up) until the checks are done."""
    soak.idle += 1
    if soak.idle == soak.calls:
        soak.all_idle.set()
    await soak.checked.wait()


async def drive_call(soak: Soak, call: TwoLegCall, until: float) -> None:
    rng = soak.rng
    speaking_id = ""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(0.2, 1.0))  # the scenario's pace
        if not speaking_id:
            status, body = await soak.call_api(
                "create",
                "POST",
                "/v1.0/speakings",
                json={
                    "reference_type": "call",
                    "reference_id": call.caller_channel_id,
                    "language": "en-US",
                    "voice_id": "espeak",
                },
            )
            if status == 201:
                speaking_id = body["id"]
                soak.sessions.add(speaking_id)
            continue
        path = f"/v1.0/speakings/{speaking_id}"
        roll = rng.random()
        if roll < 0.5:
            text = rng.choice(TEXTS)
            status, _ = await soak.call_api("say", "POST", f"{path}/say", json={"text": text})
        elif roll < 0.65:
            status, _ = await soak.call_api("flush", "POST", f"{path}/flush")
        elif roll < 0.8:
            status, _ = await soak.call_api("stop", "POST", f"{path}/stop")
            speaking_id = "" if status == 200 else speaking_id
        elif roll < 0.9:
            status, _ = await soak.call_api("delete", "DELETE", path)
            speaking_id = "" if status in (200, 404) else speaking_id
        elif roll < 0.95:
            with contextlib.suppress(AriError, aiohttp.ClientError, TimeoutError):
                await soak.ari.hangup(call.caller_channel_id)
            soak.statuses["hangup"] = soak.statuses.get("hangup", 0) + 1
            return
        else:
            status, body = await soak.call_api("get", "GET", path)
            if status == 200 and body["status"] == "stopped":
                speaking_id = ""  # hung up, or its worker was lost: a new one next
        if status in (404, 409):
            speaking_id = ""


async def inject_faults(soak: Soak, until: float) -> None:
    rng = soak.rng
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(10, 20))
        if time.monotonic() >= until:
            return
        fault = rng.choice(["redis", "worker", "ari", "asterisk"])
        soak.faults[fault] = soak.faults.get(fault, 0) + 1
        if fault == "redis":
            await asyncio.to_thread(redis_ctl, "stop", SOAK_REDIS_PORT)
            await asyncio.sleep(rng.uniform(1, 5))
            await asyncio.to_thread(redis_ctl, "start", SOAK_REDIS_PORT)
        elif fault == "worker":
            await restart_worker(soak)
        elif fault == "ari":
            soak.proxy.refusing = True
            soak.proxy.drop()
            await asyncio.sleep(rng.uniform(0.5, 3))
            soak.proxy.refusing = False
        else:
            await frozen_asterisk(rng.uniform(1, 4))


def new_worker(soak: Soak, worker_id: str) -> WorkerProcess:
    soak.worker_restarts += 1
    return WorkerProcess(
        worker_id,
        soak.workdir / f"worker-{soak.worker_restarts}.log",
        SPEAKING_REDIS_URL=SOAK_REDIS_URL,
        SPEAKING_ARI_URL=f"http://127.0.0.1:{soak.proxy.port}/ari",
        SPEAKING_MAINTENANCE_INTERVAL_S="3600",  # keep the stream whole for the checks
    )


async def restart_worker(soak: Soak) -> None:
    async with soak.lock:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            soak.task_deaths += (await soak.worker.health())[1]["task_deaths"]
        await soak.worker.stop(signal.SIGKILL)
        soak.worker = new_worker(soak, soak.worker.worker_id)
        await soak.worker.start(within_s=60)


async def _until_stopped(api: Api, redis: Redis, speaking_id: str, within_s: float = 20) -> None:
    """Polls the session's record: what is checked is the record itself, written by a
    retried teardown step, and no event says when that write landed."""
    path = f"/v1.0/speakings/{speaking_id}"
    async with asyncio.timeout(within_s):
        while (await api.call("GET", path))[1]["status"] != "stopped":  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    record = await redis.hgetall(f"speaking:session:{speaking_id}")
    assert record.get(b"stop_reason"), (speaking_id, record)


async def _until_settled(api: Api, speaking_id: str, within_s: float = 20.0) -> dict[str, Any]:
    """The session's body once it is no longer initiating (setup is bounded by 10 s)."""
    path = f"/v1.0/speakings/{speaking_id}"
    async with asyncio.timeout(within_s):
        while True:
            body: dict[str, Any] = (await api.call("GET", path))[1]
            if body["status"] != "initiating":
                return body
            await asyncio.sleep(0.2)


async def settle_and_check(soak: Soak) -> dict[str, Any]:
    """Stop everything still running through the API, then check what is left."""
    redis, api = soak.redis, soak.api
    await soak.worker.wait_health(200, within_s=30)
    report: dict[str, Any] = {}
    answering = stopped = 0
    for speaking_id in sorted(soak.sessions):
        status, body = await api.call("GET", f"/v1.0/speakings/{speaking_id}")
        if status == 404:
            continue  # deleted
        record = await redis.hgetall(f"speaking:session:{speaking_id}")
        if body["status"] == "stopped":
            assert record.get(b"stop_reason"), (speaking_id, record)
            stopped += 1
            continue
        said, refusal = await api.call(
            "POST", f"/v1.0/speakings/{speaking_id}/say", json={"text": "Still answering."}
        )
        if said == 409 and "initiating" in str(refusal):
            # Created in the chaos's last seconds, its setup still under way on a busy
            # host: it must come up (or stop, with a reason) within a setup's bound.
            body = await _until_settled(api, speaking_id)
            if body["status"] == "stopped":
                stopped += 1
                continue
            said, refusal = await api.call(
                "POST", f"/v1.0/speakings/{speaking_id}/say", json={"text": "Still answering."}
            )
        if said == 409 and "stopping" in str(refusal):
            # Its teardown is under way, its record step waiting out its backoff after
            # the Redis outage (up to 5 s): it must end stopped, with a reason.
            await _until_stopped(api, redis, speaking_id)
            stopped += 1
            continue
        assert said == 200, (speaking_id, said, body, refusal)
        answering += 1
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200
    report["sessions"] = {"created": len(soak.sessions), "stopped": stopped, "answering": answering}

    leftovers = [c["id"] for c in await soak.ari.channels() if c["id"].startswith("speaking-")]
    leftovers += [b["id"] for b in await soak.ari.bridges() if b["id"].startswith("speaking-")]
    report["asterisk_leftovers"] = leftovers
    stale_locks = []
    async for key in redis.scan_iter(match="speaking:reference:*"):
        holder: Any = await redis.get(key)
        if holder is None:
            continue
        state: Any = await redis.hget(f"speaking:session:{holder.decode()}", "status")
        if state not in (b"initiating", b"active"):
            stale_locks.append(key.decode())
    report["stale_locks"] = stale_locks

    streamed: list[str] = []
    keys, worker_id = Keys(), soak.worker.worker_id
    entries: Any = await redis.xrange(keys.commands(worker_id))
    for _entry_id, fields in entries:
        if fields.get(b"type") != b"locate":
            streamed.append(fields.get(b"command_id", b"").decode())
    pending: Any = await redis.xpending(keys.commands(worker_id), "speaking-workers")
    report["pending_entries"] = pending["pending"]
    unanswered = [c for c in streamed if not await redis.exists(keys.result(worker_id, c))]
    # A sender that hears nothing for a while sends its command again (worker/client.py),
    # and the worker answers each delivery from the stored result: a delivery gets one
    # answer, the sender takes one, so more than (deliveries - 1) left over is a command
    # answered twice for one delivery.
    deliveries = collections.Counter(streamed)
    twice = [c for c, n in deliveries.items() if await redis.llen(keys.reply(worker_id, c)) > n - 1]
    report["commands"] = {
        "sent_through_api": len(soak.commands),
        "reached_a_worker": len(set(streamed)),
        "delivered_twice_to_the_stream": len(streamed) - len(set(streamed)),
        "unanswered": len(unanswered),
        "answered_twice": len(twice),
    }
    report["api_500s"] = sum(n for k, n in soak.statuses.items() if k.endswith(" 500"))
    _, health = await soak.worker.health()
    report["task_deaths"] = soak.task_deaths + health["task_deaths"]
    report["ok"] = (
        not leftovers
        and not stale_locks
        and not unanswered
        and not twice
        and report["pending_entries"] == 0
        and report["api_500s"] == 0
        and report["task_deaths"] == 0
    )
    return report


async def run_soak(minutes: float, calls: int, seed: int, workdir: Path) -> dict[str, Any]:
    """The soak itself (also run by tests/e2e/test_soak.py); its report."""
    problem = bring_up()
    if problem:
        raise RuntimeError(problem)
    await asyncio.to_thread(redis_ctl, "start", SOAK_REDIS_PORT, "--empty")
    redis = connect(SOAK_REDIS_URL, max_connections=16, socket_timeout=30)  # survives restarts
    proxy = TcpProxy("127.0.0.1", 8088 + INSTANCE)
    await proxy.start()
    ari = Ari(ARI_URL, ARI_AUTH)
    events = await ari.events(f"soak-{uuid.uuid4().hex[:6]}")
    api = await start_api(redis, workdir / "api.log", SPEAKING_REDIS_URL=SOAK_REDIS_URL)
    placeholder = WorkerProcess("unused", workdir / "unused.log")
    soak = Soak(api, redis, ari, events, proxy, workdir, random.Random(seed), placeholder)
    soak.worker = new_worker(soak, f"soak-{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    try:
        await soak.worker.start(within_s=60)
        until = time.monotonic() + minutes * 60
        soak.calls = calls
        report: dict[str, Any] = {}

        async def check() -> None:
            async with asyncio.timeout(minutes * 60 + 300):
                await soak.all_idle.wait()
            try:
                report.update(await settle_and_check(soak))
            finally:
                soak.checked.set()

        await asyncio.gather(
            inject_faults(soak, until), check(), *(drive_slot(soak, n, until) for n in range(calls))
        )
    finally:
        with contextlib.suppress(*REDIS_OUTAGE, AssertionError, TimeoutError):
            await soak.worker.stop()
        with contextlib.suppress(AssertionError, TimeoutError):
            await stop_api(api)
        await events.close()
        await ari.close()
        await proxy.close()
        await redis.aclose()
        await asyncio.to_thread(redis_ctl, "stop", SOAK_REDIS_PORT)
    report |= {
        "minutes": minutes,
        "calls": calls,
        "seed": seed,
        "wall_s": round(time.monotonic() - started, 1),
        "faults": soak.faults,
        "worker_restarts": soak.worker_restarts - 1,
        "statuses": dict(sorted(soak.statuses.items())),
        "errors_logged": len(soak.worker.errors()),
    }
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    report = await run_soak(args.minutes, args.calls, args.seed, workdir)
    report |= {"python": platform.python_version(), "machine": platform.machine()}
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"{'PASSED' if report['ok'] else 'FAILED'}; written to {args.out}; logs in {workdir}")
    if not report["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
