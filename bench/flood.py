"""One customer flooding says must not delay another customer's flush.

On the real stack (Asterisk, Redis, one worker and one API process, two SIPp calls of
two customers): session B (customer 2) gets a flush every 50 ms, first alone, then while
customer 1 floods session A with 10,000 says:

* ``api``: through the public API, 200 requests at a time, as a customer can. The API
  lets a customer have 32 commands in flight (``SPEAKING_API_MAX_COMMANDS_IN_FLIGHT``);
  the rest are refused 429 at once.
* ``stream``: straight into the worker's Redis stream (pipelined XADDs, nobody waiting),
  as only a trusted component of the deployment could. The worker takes its stream in
  order, so B's flush waits behind the backlog: this shows the worker's read rate.

Reports B's flush acknowledgement time p50/p99/max per phase, the flood's outcomes, and
that each say got exactly one reply. Prints a table and writes bench/results/flood.json.

    python -m bench.flood [--says 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.latency import percentiles
from tests.conftest import ARI_AUTH, ARI_URL, bring_up
from tests.e2e.api_fixtures import CUSTOMER, OTHER, Api, start_api, stop_api
from tests.e2e.processes import REDIS_URL, SIP_PORT, WorkerProcess
from tests.telephony.ari import Ari
from tests.telephony.sipp import two_leg_call
from worker.client import SpeakingClient

RESULTS = Path(__file__).parent / "results" / "flood.json"


async def create(client: SpeakingClient, reference_id: str, customer_id: str = CUSTOMER) -> str:
    speaking_id = str(uuid.uuid4())
    reply = await client.send(
        "create",
        speaking_id,
        reference_type="call",
        reference_id=reference_id,
        language="en-US",
        provider="offline",
        voice_id="espeak",
        direction="in",
        customer_id=customer_id,
    )
    assert reply["ok"], reply
    await client.wait_event(speaking_id, "speaking_started", timeout_s=30)
    return speaking_id


async def flush_acks(api: Api, speaking_id: str, until: asyncio.Event) -> list[float]:
    """Flush (as customer 2) every 50 ms until ``until`` is set; each answer's time in ms."""
    acks: list[float] = []
    while not until.is_set():
        started = time.perf_counter()
        status, body = await api.call(
            "POST", f"/v1.0/speakings/{speaking_id}/flush", key=api.other_key
        )
        assert status == 200, body
        acks.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    return acks


async def flood_api(base: str, key: str, speaking_id: str, says: int) -> dict[str, int]:
    """``says`` says with ``key``, 200 at a time; how many got each HTTP status."""
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> None:
            url = f"{base}/v1.0/speakings/{speaking_id}/say"
            async with http.post(url, params={"token": key}, json={"text": "Flood."}) as r:
                await r.read()
                statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1

        await asyncio.gather(*(one() for _ in range(says)))
    return statuses


async def flood_api_elsewhere(api: Api, speaking_id: str, says: int) -> dict[str, int]:
    """``flood_api`` in a process of its own, so that the flooder's own work does not
    slow the measurement of the other customer's flushes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.flood",
        "--flood-api",
        api.base,
        api.key,
        speaking_id,
        str(says),
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(300):
        out, _ = await process.communicate()
    statuses: dict[str, int] = json.loads(out)
    return statuses


async def flood(redis: Redis, client: SpeakingClient, speaking_id: str, says: int) -> list[str]:
    """Push ``says`` says without waiting; their command ids."""
    ids = [str(uuid.uuid4()) for _ in range(says)]
    stream = client.keys.commands(client.worker_id)
    for start in range(0, says, 500):
        async with redis.pipeline(transaction=False) as pipe:
            for command_id in ids[start : start + 500]:
                entry: Any = {
                    "type": "say",
                    "command_id": command_id,
                    "speaking_id": speaking_id,
                    "text": "Flooding the queue.",
                }
                pipe.xadd(stream, entry)
            await pipe.execute()
    return ids


async def caught_up(redis: Redis, client: SpeakingClient) -> None:
    """Until the worker has read and acknowledged everything in its stream (polled: the
    group's state announces nothing)."""
    stream = client.keys.commands(client.worker_id)
    async with asyncio.timeout(120):
        while True:
            groups: Any = await redis.xinfo_groups(stream)
            group = groups[0]
            if not group["pending"] and not group["lag"]:
                return
            await asyncio.sleep(0.05)


async def phase(api: Api, victim: str, flood: Callable[[], Awaitable[Any]]) -> list[float]:
    done = asyncio.Event()
    measuring = asyncio.create_task(flush_acks(api, victim, done))
    try:
        await flood()
    finally:
        done.set()
    return await measuring


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--says", type=int, default=10_000)
    parser.add_argument("--flood-api", nargs=4, metavar=("BASE", "KEY", "ID", "N"))
    args = parser.parse_args()
    if args.flood_api:  # the flooding process
        base, key, speaking_id, says = args.flood_api
        print(json.dumps(await flood_api(base, key, speaking_id, int(says))))
        return
    problem = bring_up()
    if problem:
        raise SystemExit(problem)
    workdir = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    worker = WorkerProcess(f"flood-{uuid.uuid4().hex[:6]}", workdir / "worker.log")
    await worker.start()
    redis = Redis.from_url(REDIS_URL, socket_timeout=30)
    api = await start_api(redis, workdir / "api.log")
    client = SpeakingClient(redis, worker.worker_id)
    ari = Ari(ARI_URL, ARI_AUTH)
    events = await ari.events(f"bench-flood-{uuid.uuid4().hex[:6]}")
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "says": args.says,
    }
    try:
        options: dict[str, Any] = {"sip_port": SIP_PORT, "workdir": workdir, "events": events}
        async with (
            two_leg_call(customer_id=CUSTOMER, **options) as a,
            two_leg_call(customer_id=OTHER, **options) as b,
        ):
            flooded = await create(client, a.caller_channel_id)
            victim = await create(client, b.caller_channel_id, customer_id=OTHER)
            result["flush_ack_ms_alone"] = percentiles(
                await phase(api, victim, lambda: asyncio.sleep(3))
            )
            statuses: dict[str, int] = {}

            async def through_api() -> None:
                statuses.update(await flood_api_elsewhere(api, flooded, args.says))

            started = time.perf_counter()
            acks = await phase(api, victim, through_api)
            result["api"] = {
                "flood_s": round(time.perf_counter() - started, 2),
                "statuses": statuses,
                "flush_ack_ms": percentiles(acks),
            }
            assert (await client.send("flush", flooded))["ok"]
            ids: list[str] = []

            async def into_stream() -> None:
                ids.extend(await flood(redis, client, flooded, args.says))
                await caught_up(redis, client)

            started = time.perf_counter()
            acks = await phase(api, victim, into_stream)
            flood_s = time.perf_counter() - started
            outcomes: dict[str, int] = {}
            for command_id in ids:  # every say is answered once
                reply = await client.reply(command_id, timeout_s=60)
                code = "ok" if reply["ok"] else reply["error"]["code"]
                outcomes[code] = outcomes.get(code, 0) + 1
            twice = sum([await redis.llen(client.keys.reply(client.worker_id, i)) for i in ids])
            result["stream"] = {
                "flood_s": round(flood_s, 2),
                "entries_per_s": round(args.says / flood_s),
                "outcomes": outcomes,
                "replies_left_over": twice,
                "flush_ack_ms": percentiles(acks),
            }
            for sid in (flooded, victim):
                assert (await client.send("stop", sid))["ok"]
    finally:
        await events.close()
        await ari.close()
        await stop_api(api)
        await worker.stop()
        await redis.aclose()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"through the API: {result['api']['statuses']} in {result['api']['flood_s']} s")
    stream = result["stream"]
    print(
        f"into the stream: {stream['outcomes']} in {stream['flood_s']} s "
        f"({stream['entries_per_s']} entries/s), extra replies: {stream['replies_left_over']}"
    )
    print("flush ack of another customer's session (ms)   p50      p99      max     n")
    rows = {
        "alone": result["flush_ack_ms_alone"],
        "during an API flood": result["api"]["flush_ack_ms"],
        "during a stream flood": stream["flush_ack_ms"],
    }
    for name, p in rows.items():
        print(f"  {name:42} {p['p50']:8.1f} {p['p99']:8.1f} {p['max']:8.1f} {p['n']:5}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
