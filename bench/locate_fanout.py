"""Routing a create with W workers: the API's ``locate`` fan-out, measured on Redis.

The API tier's create path asks every live worker (``speaking:workers``) whether its
Asterisk holds the call (worker/api/directory.py): one ``locate`` command per worker on
its stream, one BLPOP per worker for the reply, and it answers once all replied. Here
W simulated workers (bench/locate_fleet.py, a child process using the worker's own
Redis code; only the ARI lookup is a sleep) serve the real ``WorkerDirectory``, run in
this process with the API's own pools and settings. Per W and per concurrency C (C
locates at once, in bursts): latency p50/p99/max, failures, Redis commands per locate
(``INFO commandstats``, less the fleet's idle background measured first), Redis bytes
and CPU per locate, and CPU per locate of the API side (this process) and of the
fleet. Also the fleet's background (heartbeats, leases, janitor) per W. Only Redis is
needed: a Redis on ``--redis-port`` (default 6460) is started if none runs, and
stopped afterwards.

    python -m bench.locate_fanout [--workers 1,10,50,100] [--concurrency 1,10,50]
                                  [--locates 200] [--think-ms 4] [--parallel-lookups]
                                  [--out locate-fanout]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import write_results
from bench.latency import percentiles
from bench.load import cpu_ms
from bench.locate_fleet import worker_ids
from bench.redis_stats import Delta, RedisStats
from tests.conftest import redis_ctl
from tests.e2e.processes import ServiceProcess
from worker.api.directory import Located, Unreachable, WorkerDirectory
from worker.api.pools import RedisPools
from worker.api.settings import ApiSettings
from worker.maintenance import JANITOR_S
from worker.store import Keys

PREFIX = "speaking"


class Resends(logging.Handler):
    """Counts SpeakingClient's "sending the command again" (it re-sends a command, same
    id, when a Redis call fails under it: here, when the reply pool has no free
    connection), instead of printing one warning per locate."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "sending the command again" in record.getMessage():
            self.count += 1


RESENDS = Resends()


class Fleet:
    """The child process with W simulated workers."""

    def __init__(self, url: str, count: int, think_ms: float, serial: bool, log: Path) -> None:
        env = {**os.environ, "SPEAKING_REDIS_URL": url, "SPEAKING_REDIS_PREFIX": PREFIX}
        env |= {"BENCH_FLEET_WORKERS": str(count), "BENCH_FLEET_THINK_MS": str(think_ms)}
        env |= {"BENCH_FLEET_SERIAL": "1" if serial else "0"}
        self.process = ServiceProcess("bench.locate_fleet", log, env, ready='"fleet ready"')

    async def start(self) -> None:
        await self.process.start(within_s=60)

    async def janitor(self, on: bool) -> None:
        """Pause or resume the janitors; returns once no sweep runs any more (paused)."""
        assert self.process.proc is not None
        line = f'"janitor {"on" if on else "paused"}"'
        seen = len([x for x in self.process.lines if line in x])
        self.process.proc.send_signal(signal.SIGUSR2)
        async with asyncio.timeout(10):
            while len([x for x in self.process.lines if line in x]) == seen:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.0 if on else 1.0)  # a sweep under way ends

    def cpu_ms(self) -> float:
        assert self.process.proc is not None
        return cpu_ms(self.process.proc.pid)

    async def stop(self) -> None:
        code = await self.process.stop(within_s=60)
        assert code == 0, self.process.tail()


class Probe:
    """Counters around one measured stretch: Redis, this process's CPU, the fleet's."""

    def __init__(self, stats: RedisStats, fleet: Fleet) -> None:
        self.stats, self.fleet = stats, fleet

    async def measure(self, work: Callable[[], Awaitable[Any]]) -> tuple[Delta, float, float]:
        """Run ``await work()``; (Redis delta, API-side CPU s, fleet CPU s) over it."""
        before = await self.stats.snapshot()
        cpu0, fleet0 = time.process_time(), self.fleet.cpu_ms()
        await work()
        cpu = time.process_time() - cpu0
        fleet = (self.fleet.cpu_ms() - fleet0) / 1000
        return RedisStats.delta(before, await self.stats.snapshot()), cpu, fleet


async def locate_cell(
    directory: WorkerDirectory,
    probe: Probe,
    workers: list[str],
    conc: int,
    total: int,
    hints: Redis | None = None,
) -> tuple[list[float], dict[str, int], Delta, float, float, float]:
    """``total`` locates in bursts of ``conc``: latencies (ms), failures by kind, Redis
    delta, API CPU s, fleet CPU s, wall s. With ``hints``, each call's routing hint
    (``speaking:where:call:<id>``, as a real worker publishes it) is written first,
    outside the measurement."""
    rng = random.Random(conc * 1000 + len(workers))
    holders = [rng.choice(workers) for _ in range(total)]
    if hints is not None:
        async with hints.pipeline(transaction=False) as pipe:
            for n, holder in enumerate(holders):
                pipe.set(Keys(PREFIX).call_location(f"{holder}-call-{n}"), holder, ex=600)
            await pipe.execute()
    latencies: list[float] = []
    failures: dict[str, int] = {}

    def failed(kind: str) -> None:
        failures[kind] = failures.get(kind, 0) + 1

    async def one(n: int) -> None:
        holder = holders[n]
        started = time.perf_counter()
        try:
            found: Located | None = await directory.locate("call", f"{holder}-call-{n}")
        except Unreachable:
            failed("Unreachable")
            return
        except Exception as exc:  # counted, not raised: a pool limit is a finding here
            failed(type(exc).__name__)
            return
        latencies.append((time.perf_counter() - started) * 1000)
        if found is None or found.worker_id != holder:
            failed("wrong worker or none")

    async def bursts() -> None:
        for start in range(0, total, conc):
            async with asyncio.timeout(60):
                await asyncio.gather(*(one(n) for n in range(start, min(total, start + conc))))

    started = time.monotonic()
    resent = RESENDS.count
    delta, cpu, fleet_cpu = await probe.measure(bursts)
    if RESENDS.count > resent:
        failures["locate commands sent again"] = RESENDS.count - resent
    return latencies, failures, delta, cpu, fleet_cpu, time.monotonic() - started


async def run_fleet(
    args: argparse.Namespace, url: str, count: int, stats: RedisStats, work: Path
) -> dict[str, Any]:
    fleet = Fleet(url, count, args.think_ms, not args.parallel_lookups, work / f"fleet-{count}.log")
    await fleet.start()
    # The API's own pools and settings, as worker/api/main.py makes them.
    settings = ApiSettings(redis_url=url, redis_prefix=PREFIX)
    pools = RedisPools.from_settings(settings)
    directory = WorkerDirectory(pools, Keys(PREFIX), settings.worker_stale_s)
    workers = worker_ids(count)
    probe = Probe(stats, fleet)
    try:
        async with asyncio.timeout(15):  # every simulated worker is in the directory
            while len(await directory.live()) != count:  # noqa: ASYNC110 (Redis has no event for it)
                await asyncio.sleep(0.1)
        # The janitors' first sweeps come JANITOR_S after the start; a window that ends
        # mid-sweep under-counts them, so settle first and span several sweeps.
        await asyncio.sleep(JANITOR_S + 1.0)
        full, _, _ = await probe.measure(lambda: asyncio.sleep(args.idle_s))
        # Locates are measured with the janitors paused: their sweeps (W-1 GETs each)
        # slow down when the fleet's process is busy, so subtracting them as a steady
        # background would be wrong. What stays (heartbeats) is steady and cheap.
        await fleet.janitor(on=False)
        background, _, fleet_idle = await probe.measure(lambda: asyncio.sleep(args.idle_s))
        cells = []
        for conc in args.concurrency:
            hints = pools.main if args.hinted else None
            await locate_cell(directory, probe, workers, conc, conc, hints)  # warm the pools
            lat, failures, delta, cpu, fleet_cpu, wall = await locate_cell(
                directory, probe, workers, conc, args.locates, hints
            )
            done = args.locates  # failed ones did their Redis work too
            cell = {
                "workers": count,
                "concurrency": conc,
                "locates": args.locates,
                "failures": failures,
                "latency_ms": percentiles(lat) if lat else None,
                "locates_per_s": round(args.locates / wall, 1),
                "redis_per_locate": delta.minus(background).per(done),
                "api_cpu_us_per_locate": round(cpu * 1e6 / done, 1),
                "fleet_cpu_us_per_locate": round(
                    (fleet_cpu - fleet_idle * wall / background.seconds) * 1e6 / done, 1
                ),
                "fleet_cpu_share": round(fleet_cpu / wall, 2),
            }
            cells.append(cell)
            print_cell(cell)
        return {
            "workers": count,
            "background_per_s": full.per(full.seconds),
            "heartbeats_only_per_s": background.per(background.seconds),
            "fleet_idle_cpu_share": round(fleet_idle / background.seconds, 3),
            "cells": cells,
        }
    finally:
        await pools.close()
        await fleet.stop()


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line y = a + b x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def growth(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How the sequential (C=1) figures and the background grow with W."""
    seq = [c for r in runs for c in r["cells"] if c["concurrency"] == 1 and c["latency_ms"]]
    if len({c["workers"] for c in seq}) < 2:
        return {}

    def line(value: Any) -> dict[str, float]:
        a, b = fit([(c["workers"], float(value(c))) for c in seq])
        return {"intercept": round(a, 3), "per_worker": round(b, 3)}

    per_worker_bg = [
        (r["workers"], r["background_per_s"]["ops"] / r["workers"]) for r in runs if r["workers"]
    ]
    a, b = fit([(float(w), v) for w, v in per_worker_bg])
    return {
        "redis_ops_per_locate": line(lambda c: c["redis_per_locate"]["ops"]),
        "redis_bytes_out_per_locate": line(lambda c: c["redis_per_locate"]["bytes_out"]),
        "redis_cpu_us_per_locate": line(lambda c: c["redis_per_locate"]["redis_cpu_us"]),
        "api_cpu_us_per_locate": line(lambda c: c["api_cpu_us_per_locate"]),
        "latency_p50_ms": line(lambda c: c["latency_ms"]["p50"]),
        "latency_p99_ms": line(lambda c: c["latency_ms"]["p99"]),
        # ops/s per worker = a + b W: the janitor reads every other worker's lease.
        "background_ops_per_s_per_worker": {"intercept": round(a, 3), "per_worker": round(b, 3)},
    }


def print_cell(c: dict[str, Any]) -> None:
    lat = c["latency_ms"] or {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    r = c["redis_per_locate"]
    top = ", ".join(f"{k} {v:g}" for k, v in list(r["by_command"].items())[:6])
    print(
        f"W={c['workers']:4} C={c['concurrency']:3}  p50/p99/max {lat['p50']:7.1f} "
        f"{lat['p99']:7.1f} {lat['max']:7.1f} ms  {c['locates_per_s']:7.1f}/s  "
        f"redis {r['ops']:7.1f} ops {r['bytes_out'] / 1024:6.1f} KiB out "
        f"{r['redis_cpu_us']:6.0f} us  api {c['api_cpu_us_per_locate']:6.0f} us  "
        f"fleet {c['fleet_cpu_us_per_locate']:6.0f} us ({c['fleet_cpu_share']:.2f} core)  "
        f"failed {c['failures'] or 0}  [{top}]",
        flush=True,
    )


def print_growth(g: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    print("\nbackground of the fleet (no locates), Redis ops/s:")
    for r in runs:
        bg = r["background_per_s"]
        top = ", ".join(f"{k} {v:g}" for k, v in list(bg["by_command"].items())[:5])
        rate = f"{bg['ops']:8.1f} ops/s, {bg['bytes_out']:9.0f} B/s out"
        print(f"  W={r['workers']:4}: {rate} [{top}]")
    if not g:
        return
    print("\nwhat grows with W (sequential locates, least-squares line a + b*W):")
    for name, v in g.items():
        print(f"  {name:34} {v['intercept']:10.3f} + {v['per_worker']:8.3f} * W")


async def measure_all(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    stats = RedisStats(url)
    work = Path(tempfile.mkdtemp(prefix="bench-locate-"))
    runs: list[dict[str, Any]] = []
    try:
        for count in (int(v) for v in args.workers.split(",")):
            runs.append(await run_fleet(args, url, count, stats, work))
    finally:
        await stats.close()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default="1,10,50,100")
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--locates", type=int, default=200, help="per (W, C)")
    parser.add_argument("--think-ms", type=float, default=4.0, help="one ARI lookup")
    parser.add_argument("--parallel-lookups", action="store_true", help="not one at a time")
    parser.add_argument("--idle-s", type=float, default=8.0, help="background window")
    parser.add_argument("--redis-port", type=int, default=6460)
    parser.add_argument(
        "--hinted", action="store_true", help="each call's routing hint published first"
    )
    parser.add_argument("--out", default="locate-fanout", help="bench/results/<out>.json")
    args = parser.parse_args()
    args.concurrency = [int(v) for v in args.concurrency.split(",")]
    client_log = logging.getLogger("worker.client")
    client_log.addHandler(RESENDS)
    client_log.propagate = False
    url = f"redis://127.0.0.1:{args.redis_port}/0"
    ping = ["redis-cli", "-p", str(args.redis_port), "ping"]
    running = subprocess.run(ping, capture_output=True, text=True, timeout=10).stdout
    started = running.strip() != "PONG"  # stopped afterwards only if this run started it
    if started:
        redis_ctl("start", args.redis_port, "--empty")
    try:
        runs = asyncio.run(measure_all(args, url))
    finally:
        if started:
            redis_ctl("stop", args.redis_port)
    g = growth(runs)
    print_growth(g, runs)
    options = {k: v for k, v in vars(args).items() if k not in ("redis_port", "out")}
    path = write_results(args.out, {"options": options, "runs": runs, "growth": g})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
