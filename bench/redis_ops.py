"""Redis operations per session per second, on the real product.

Real Asterisk, Redis, a worker and an API process; N sessions on real two-leg SIPp calls
(bench/load.py's ``Calls``), created and spoken to through the API. Windows measured
with ``INFO commandstats`` / ``INFO stats`` / ``INFO cpu`` deltas (bench/redis_stats.py):

* baseline: the worker and the API with no session (the worker's heartbeat, lease,
  janitor, maintenance);
* idle: N active sessions, no speech (adds each session's lock refresh);
* streaming: one say per session every ``--say-every`` seconds through the API.

Per window: Redis ops by command name, bytes in/out and Redis CPU, per session-second;
for streaming also per say (less the idle window's rate) with the events per say. Nothing
reads events during a window (the bench's own event reader runs only while sessions are
set up), so what is counted is the worker's and the API's traffic. Defaults to Asterisk
instance 4 and Redis 6461 (``SPEAKING_ASTERISK_INSTANCE`` / ``SPEAKING_REDIS_PORT``,
read by the test harness when it is imported, hence set first); stops them afterwards
if it started them.

    python -m bench.redis_ops [--calls 1,20] [--idle-s 30] [--stream-s 30] [--say-every 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("SPEAKING_ASTERISK_INSTANCE", "4")
os.environ.setdefault("SPEAKING_REDIS_PORT", "6461")

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import write_results
from bench.load import SENTENCE, Calls, EventLog, post_all
from bench.redis_stats import Delta, RedisStats
from bench.stack import Stack, bench_stack
from tests.conftest import (
    INSTANCE,
    REDIS_PORT,
    ROOT,
    asterisk_ctl,
    bring_up,
    redis_ctl,
)
from tests.e2e.api_fixtures import Api
from tests.e2e.conftest import our_leftovers
from tests.e2e.processes import REDIS_URL
from tests.telephony.ari import AriEvents
from worker.store import Keys

KEYS = Keys()  # the default prefix, as the worker and the API run here


async def window(stats: RedisStats, seconds: float) -> Delta:
    before = await stats.snapshot()
    await asyncio.sleep(seconds)
    return RedisStats.delta(before, await stats.snapshot())


async def events_since(redis: Redis, after: bytes, until_ms: int) -> dict[str, int]:
    """Event types on the global stream after entry ``after`` up to ``until_ms``."""
    counts: dict[str, int] = {}
    entries: Any = await redis.xrange(KEYS.events(), min=b"(" + after, max=str(until_ms))
    for _entry_id, fields in entries:
        kind = fields.get(b"type", b"?").decode()
        counts[kind] = counts.get(kind, 0) + 1
    return counts


async def last_event(redis: Redis) -> bytes:
    last: Any = await redis.xrevrange(KEYS.events(), count=1)
    return bytes(last[0][0]) if last else b"0-0"


async def sessions_up(calls: Calls, api: Api, redis: Redis, voice: str) -> list[str]:
    """One session per call through the API, active, with the synthesis cache warm."""
    log = EventLog(redis)
    await log.start()
    try:
        body = {"reference_type": "call", "language": "en-US", "provider": "offline"}
        body |= {"voice_id": voice, "direction": "in"}
        answers = await asyncio.gather(
            *(
                api.call("POST", "/v1.0/speakings", json=body | {"reference_id": c})
                for c in calls.ports
            )
        )
        assert all(s == 201 for s, _ in answers), answers
        sids = [str(a["id"]) for _, a in answers]
        await log.wait_all([(s, "speaking_started", "") for s in sids], 60)
        warm = await post_all(api, [f"/v1.0/speakings/{sids[0]}/say"], {"text": SENTENCE})
        await log.wait_all([(sids[0], "segment_finished", warm[0]["segment_id"])], 30)
        return sids
    finally:
        await log.stop()


async def streaming(
    api: Api, stats: RedisStats, sids: list[str], seconds: float, every: float
) -> tuple[Delta, int]:
    """A say into every session every ``every`` s, spread over the interval; the window
    ends ``every`` s after the last round, when its says have played (SENTENCE is about
    4 s). Returns the delta and the says the API accepted."""
    rounds = max(1, round(seconds / every))
    accepted = 0
    gap = every / len(sids)

    async def say(sid: str, delay: float) -> None:
        nonlocal accepted
        await asyncio.sleep(delay)
        status, _ = await api.call("POST", f"/v1.0/speakings/{sid}/say", json={"text": SENTENCE})
        accepted += status == 200

    before = await stats.snapshot()
    t0 = time.monotonic()
    for r in range(rounds):
        async with asyncio.timeout(every * 3):
            await asyncio.gather(*(say(s, i * gap) for i, s in enumerate(sids)))
        await asyncio.sleep(max(0.0, t0 + (r + 1) * every - time.monotonic()))
    await asyncio.sleep(every)
    return RedisStats.delta(before, await stats.snapshot()), accepted


async def run_n(
    n: int,
    args: argparse.Namespace,
    env: tuple[Api, AriEvents, RedisStats],
    base: Delta,
    work: Path,
) -> dict[str, Any]:
    """N sessions: idle window, streaming window, then stopped. ``base``: the baseline."""
    api, events, stats = env
    calls = Calls(n, events, work)
    await calls.start()
    log_redis = Redis.from_url(REDIS_URL, socket_timeout=30)
    redis = Redis.from_url(REDIS_URL, socket_timeout=30)
    try:
        sids = await sessions_up(calls, api, log_redis, args.voice)
        await log_redis.aclose()  # its blocked XREAD ends with it: no reader in the windows
        await asyncio.sleep(1.0)
        idle = await window(stats, args.idle_s)
        mark = await last_event(redis)
        stream, says = await streaming(api, stats, sids, args.stream_s, args.say_every)
        kinds = await events_since(redis, mark, int(time.time() * 1000))
        stops = await post_all(api, [f"/v1.0/speakings/{s}/stop" for s in sids], {})
        assert all(a["status"] == "stopped" for a in stops)
    finally:
        await redis.aclose()
        await calls.close()
    per_say = stream.minus(idle)
    n_events = sum(kinds.values())
    return {
        "sessions": n,
        # per session-second: everything in the window / N, and less the 0-session baseline
        "idle": {"seconds": round(idle.seconds, 2), **idle.per(n * idle.seconds)},
        "idle_marginal": idle.minus(base).per(n * idle.seconds),
        "streaming": {"seconds": round(stream.seconds, 2), **stream.per(n * stream.seconds)},
        "streaming_marginal": stream.minus(base).per(n * stream.seconds),
        "says": says,
        "events": kinds,
        "events_per_say": round(n_events / max(1, says), 2),
        "per_say": per_say.per(max(1, says)),
        "says_per_session_per_s": round(says / (n * stream.seconds), 3),
    }


def row(label: str, n: int, p: dict[str, Any]) -> None:
    top = ", ".join(f"{k} {v:g}" for k, v in list(p["by_command"].items())[:7])
    print(
        f"{label:26} N={n:3}  {p['ops']:8.2f} ops  {p['bytes_in']:8.0f} B in  "
        f"{p['bytes_out']:8.0f} B out  {p['redis_cpu_us']:7.1f} us cpu  [{top}]",
        flush=True,
    )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-redis-ops-"))
    async with bench_stack("bench-ops", work) as stack:
        return await _measure(args, stack, work)


async def _measure(args: argparse.Namespace, stack: Stack, work: Path) -> dict[str, Any]:
    api, events, ari = stack.api, stack.events, stack.ari
    stats = RedisStats(REDIS_URL)
    results: dict[str, Any] = {"options": vars(args)}
    try:
        await asyncio.sleep(3.0)  # past the worker's start-up writes
        base = await window(stats, args.idle_s)
        results["baseline"] = {"seconds": round(base.seconds, 2), **base.per(base.seconds)}
        print("Redis per second (baseline) or per session-second (idle, streaming):")
        row("baseline, per worker-s", 0, results["baseline"])
        results["runs"] = []
        for n in (int(v) for v in args.calls.split(",")):
            (work / f"n{n}").mkdir()
            r = await run_n(n, args, (api, events, stats), base, work / f"n{n}")
            r["leftovers"] = len(await our_leftovers(ari))
            results["runs"].append(r)
            row("idle, per session-s", n, r["idle"])
            row("  less the baseline", n, r["idle_marginal"])
            row("streaming, per session-s", n, r["streaming"])
            row("  less the baseline", n, r["streaming_marginal"])
            row(f"per say ({r['events_per_say']:g} events)", n, r["per_say"])
    finally:
        await stats.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="1,20", help="comma-separated N values")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle windows (baseline too)")
    parser.add_argument("--stream-s", type=float, default=30.0, help="streaming window")
    parser.add_argument("--say-every", type=float, default=5.0, help="seconds between says")
    parser.add_argument("--voice", default="espeak")
    args = parser.parse_args()
    status = [str(ROOT / "scripts/asterisk.sh"), "status", str(INSTANCE)]
    asterisk_ran = subprocess.run(status, capture_output=True, timeout=30).returncode == 0
    ping = ["redis-cli", "-p", str(REDIS_PORT), "ping"]
    redis_ran = subprocess.run(ping, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        problem = bring_up()
        if problem:
            raise SystemExit(problem)
        results = asyncio.run(measure(args))
    finally:  # only what this run started
        if not asterisk_ran:
            asterisk_ctl("stop", INSTANCE)
        if redis_ran != "PONG":
            redis_ctl("stop", REDIS_PORT)
    results["asterisk_instance"] = INSTANCE
    path = write_results("redis-ops", results)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
