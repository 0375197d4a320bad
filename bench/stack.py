"""The product as a load bench drives it: one worker and one API process beside the
bench Asterisk and Redis, with the API's per-customer caps raised (one bench customer
stands for hundreds of callers), and an ARI events app of the bench's own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from tests.conftest import ARI_AUTH, ARI_URL
from tests.e2e.api_fixtures import Api, start_api, stop_api
from tests.e2e.processes import REDIS_URL, WorkerProcess
from tests.telephony.ari import Ari, AriEvents

#: Far above any N a bench runs: a bench measures the product, not the API's caps.
BENCH_CAPS = {
    "SPEAKING_API_MAX_COMMANDS_IN_FLIGHT": "2000",
    "SPEAKING_API_MAX_REQUESTS_IN_FLIGHT_PER_CUSTOMER": "2000",
}


@dataclass(frozen=True)
class Stack:
    worker: WorkerProcess
    api: Api
    redis: Redis
    ari: Ari
    events: AriEvents

    def pids(self) -> dict[str, int]:
        """The worker's and the API's process ids (to measure their CPU and memory)."""
        assert self.worker.proc is not None and self.api.process.proc is not None
        return {"worker": self.worker.proc.pid, "api": self.api.process.proc.pid}


@contextlib.asynccontextmanager
async def bench_stack(name: str, workdir: Path, **worker_env: str) -> AsyncIterator[Stack]:
    """Start the worker and the API (logs in ``workdir``), yield them, and stop
    everything this started however the bench ends. ``bring_up()`` must have run."""
    async with contextlib.AsyncExitStack() as stack:
        worker = WorkerProcess(f"{name}-{os.getpid()}", workdir / "worker.log", **worker_env)
        await worker.start()
        stack.push_async_callback(worker.stop)
        redis = Redis.from_url(REDIS_URL)
        stack.push_async_callback(redis.aclose)
        api = await start_api(redis, workdir / "api.log", **BENCH_CAPS)
        stack.push_async_callback(stop_api, api)
        ari = Ari(ARI_URL, ARI_AUTH)
        stack.push_async_callback(ari.close)
        events = await ari.events(f"{name}-{os.getpid()}")
        stack.push_async_callback(events.close)
        yield Stack(worker, api, redis, ari, events)
