"""Latency of the call path on the real stack: create -> active, say -> first frame
sent and -> first audio heard by the party, flush -> silence, stop -> acknowledged.

Starts Asterisk and Redis if needed (as the tests do) and a worker process, places one
real two-leg SIPp call, and repeats the cycle ``--runs`` times per voice. Prints
percentiles and writes bench/results/latency.json.

    python -m bench.latency [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tests.conftest import ARI_AUTH, ARI_URL, bring_up
from tests.e2e.processes import REDIS_URL, SIP_PORT, WorkerProcess
from tests.telephony.analysis import first_loud_time, in_window, speech_frames
from tests.telephony.sipp import two_leg_call
from worker.client import SpeakingClient

RESULTS = Path(__file__).parent / "results" / "latency.json"
SHORT = "Hello! How can I help you today?"
LONG = "This is a long announcement. " * 6


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {
        "p50": pick(0.5),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
        "n": len(ordered),
    }


async def one_cycle(client: SpeakingClient, call: Any, voice: str) -> dict[str, float]:
    speaking_id = str(uuid.uuid4())
    t0 = time.time()
    reply = await client.send(
        "create",
        speaking_id,
        reference_type="call",
        reference_id=call.caller_channel_id,
        language="en-US",
        provider="offline",
        voice_id=voice,
        direction="in",
    )
    assert reply["ok"], reply
    await client.wait_event(speaking_id, "speaking_started", timeout_s=30)
    active = time.time() - t0

    said = time.time()
    say = await client.send("say", speaking_id, text=SHORT)
    started = await client.wait_event(speaking_id, "segment_started", segment_id=say["segment_id"])
    await client.wait_event(speaking_id, "segment_finished", segment_id=say["segment_id"])
    heard = first_loud_time(call.received("caller"), after=said)

    long = await client.send("say", speaking_id, text=LONG)
    await client.wait_event(speaking_id, "segment_started", segment_id=long["segment_id"])
    await asyncio.sleep(0.6)  # let it talk, then barge in
    flush_at = time.time()
    await client.send("flush", speaking_id)
    flush_ack = time.time() - flush_at
    await asyncio.sleep(0.3)  # what arrives in the next 300 ms counts against the flush
    after = speech_frames(in_window(call.received("caller"), flush_at))
    stop_at = time.time()
    await client.send("stop", speaking_id)
    stop_ack = time.time() - stop_at
    return {
        "create_to_active_ms": active * 1000,
        "say_to_first_frame_sent_ms": float(started["latency_ms"]),
        "say_to_first_audio_heard_ms": ((heard or said) - said) * 1000,
        "flush_ack_ms": flush_ack * 1000,
        "flush_to_silence_ms": (max(p.arrival for p in after) - flush_at) * 1000 if after else 0.0,
        "stop_ack_ms": stop_ack * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    problem = bring_up()
    if problem:
        raise SystemExit(problem)
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    worker = WorkerProcess(f"bench-{uuid.uuid4().hex[:6]}", workdir / "worker.log")
    await worker.start()
    redis = Redis.from_url(REDIS_URL)
    client = SpeakingClient(redis, worker.worker_id)
    results: dict[str, Any] = {}
    try:
        async with two_leg_call(
            sip_port=SIP_PORT, ari_url=ARI_URL, ari_auth=ARI_AUTH, workdir=workdir, duration_s=600
        ) as call:
            for voice in ("espeak", "en_US-joe-medium"):
                cycles = [await one_cycle(client, call, voice) for _ in range(args.runs)]
                results[voice] = {k: percentiles([c[k] for c in cycles]) for k in cycles[0]}
    finally:
        await worker.stop()
        await redis.aclose()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "runs": args.runs,
                "results": results,
            },
            indent=2,
        )
    )
    for voice, table in results.items():
        print(f"\nvoice {voice} ({args.runs} runs)        p50      p95      max   (ms)")
        for key, p in table.items():
            print(f"  {key:30} {p['p50']:8.1f} {p['p95']:8.1f} {p['max']:8.1f}")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
