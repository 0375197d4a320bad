"""``speaking-worker``: the daemon process. Wires settings, Redis, engines, ARI and
the metrics endpoint, and turns SIGTERM/SIGINT into a clean shutdown (every
session stopped with reason ``shutdown``, everything created in Asterisk removed)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from worker import logs
from worker.config import Settings
from worker.engines.configured import build_engines
from worker.metrics import Registry
from worker.presence import WorkerIdInUse
from worker.redis_retry import connect
from worker.store import Keys, Store
from worker.worker import Worker

log = logging.getLogger("worker.daemon")


async def serve_metrics(worker: Worker, settings: Settings) -> web.AppRunner | None:
    if not settings.metrics_port:
        return None

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            text=worker.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ready": worker.ready.is_set(),
                "ari": worker.ari.connected.is_set(),
                "ari_state": worker.ari.state.value,
                "redis": worker.presence.redis_ok,
                "dead_tasks": sorted(worker.supervisor.dead),
                "task_deaths": worker.supervisor.deaths,
                "sessions": len(worker.live_sessions()),
            },
            status=200 if worker.healthy else 503,
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    return runner


#: The longest a SIGTERM may take to end the worker (sessions get 10 s of it).
SHUTDOWN_LIMIT_S = 16.0


async def run(settings: Settings, keys: Keys) -> int:
    # Timeouts: a frozen Redis must fail a call, not hang it (the command reader blocks
    # for 1 s at a time, well inside the read timeout).
    redis = connect(settings.redis_url, settings.redis_connections, socket_timeout=5.0)
    worker = Worker(
        settings,
        Store(redis, settings.worker_id, keys),
        build_engines(settings),
        Registry(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker starting", extra={"settings": str(settings.redacted())})
    # /healthz answers 503 until the worker is ready, so serve it first.
    http = await serve_metrics(worker, settings)
    code = 0
    try:
        if await _start_unless_stopped(worker, stop):
            await stop.wait()
        log.info("worker shutting down")
        try:
            # Bounded: SIGTERM must end the process (what is left in Asterisk is swept
            # by the next start); the log says which step overran.
            async with asyncio.timeout(SHUTDOWN_LIMIT_S):
                await worker.shutdown()
        except TimeoutError:
            log.error("shutdown overran; exiting anyway", extra={"step": worker.shutdown_step})
            code = 1
    except WorkerIdInUse as exc:
        log.error("worker could not start", extra={"error": str(exc)})
        await worker.ari.close()
        code = 1
    finally:
        if http:
            await http.cleanup()
        await redis.aclose()
    return code


async def _start_unless_stopped(worker: Worker, stop: asyncio.Event) -> bool:
    """Start the worker; False if a signal came first (the start is abandoned)."""
    starting = asyncio.create_task(worker.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()  # raises WorkerIdInUse
        return True
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    return False


def main() -> None:
    try:
        settings = Settings.from_env()
        keys = Keys(settings.redis_prefix, settings.event_shards)
    except ValueError as exc:  # a bad setting: say which, without a traceback
        raise SystemExit(f"speaking worker: {exc}") from None
    logs.configure(settings.log_level)
    raise SystemExit(asyncio.run(run(settings, keys)))


if __name__ == "__main__":
    main()
