"""Set-up time of conference sessions on the real stack, per kind: create -> active
(measured by the client, and the worker's own ``setup_ms``) and stop -> acknowledged.

Starts Asterisk and Redis if needed (as the tests do) and a worker process, puts three
SIPp participants into a dialplan ConfBridge room and three into an ARI conference
(the tests' conference service), and repeats create / stop ``--runs`` times on each.
Prints percentiles and writes bench/results/conference-setup.json.

    python -m bench.conference_setup [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.latency import percentiles
from tests.conftest import ARI_AUTH, ARI_URL, bring_up
from tests.e2e.conftest import our_leftovers
from tests.e2e.processes import REDIS_URL, SIP_PORT, WorkerProcess
from tests.telephony.ari import Ari
from tests.telephony.conference import Conference, ConferenceService, Kind
from worker.client import SpeakingClient

RESULTS = Path(__file__).parent / "results" / "conference-setup.json"


async def one_cycle(client: SpeakingClient, conf: Conference) -> dict[str, float]:
    speaking_id = str(uuid.uuid4())
    t0 = time.time()
    reply = await client.send(
        "create",
        speaking_id,
        reference_type="confbridge",
        reference_id=conf.reference,
        language="en-US",
        provider="offline",
        voice_id="espeak",
        customer_id="cust-1",
    )
    assert reply["ok"], reply
    started = await client.wait_event(speaking_id, "speaking_started", timeout_s=30)
    active = time.time() - t0
    stop_at = time.time()
    reply = await client.send("stop", speaking_id)
    assert reply["ok"], reply
    return {
        "create_to_active_ms": active * 1000,
        "worker_setup_ms": float(started["setup_ms"]),
        "stop_ack_ms": (time.time() - stop_at) * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    problem = bring_up()
    if problem:
        raise SystemExit(problem)
    workdir = Path(tempfile.mkdtemp(prefix="bench-conference-"))
    worker = WorkerProcess(f"bench-{uuid.uuid4().hex[:6]}", workdir / "worker.log")
    await worker.start()
    redis = Redis.from_url(REDIS_URL)
    client = SpeakingClient(redis, worker.worker_id)
    ari = Ari(ARI_URL, ARI_AUTH)
    events = await ari.events(f"bench-conference-{uuid.uuid4().hex[:6]}")
    service = ConferenceService(Ari(ARI_URL, ARI_AUTH))
    await service.start()
    results: dict[str, Any] = {}
    leftovers: list[str] = []
    try:
        kinds: list[Kind] = ["confbridge", "ari"]
        for kind in kinds:
            async with Conference(
                kind,
                events,
                workdir,
                sip_port=SIP_PORT,
                service=service if kind == "ari" else None,
                duration_s=600,
            ) as conf:
                for _ in range(3):
                    await conf.join()
                cycles = [await one_cycle(client, conf) for _ in range(args.runs)]
            results[kind] = {k: percentiles([c[k] for c in cycles]) for k in cycles[0]}
        leftovers = await our_leftovers(ari)
    finally:
        await service.close()
        await service.ari.close()
        await events.close()
        await ari.close()
        await worker.stop()
        await redis.aclose()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "runs": args.runs,
                "participants": 3,
                "results": results,
                "leftovers": leftovers,
            },
            indent=2,
        )
    )
    for name, table in results.items():
        print(f"\n{name} conference ({args.runs} runs)   p50      p95      max   (ms)")
        for key, p in table.items():
            print(f"  {key:26} {p['p50']:8.1f} {p['p95']:8.1f} {p['max']:8.1f}")
    print(f"\nleftover channels and bridges of ours: {len(leftovers)}\nwritten to {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
