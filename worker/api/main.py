"""``speaking-api``: serve the REST API, or manage API keys.

speaking-api                          serve (settings from SPEAKING_API_* variables)
speaking-api add-key --customer ID    print a new API key for that customer
speaking-api list-keys                each key's id (never the key) and customer
speaking-api revoke-key --id ID       revoke a key by its id (or: revoke-key KEY | -)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from worker import logs
from worker.api.app import make_app, make_metrics_app
from worker.api.auth import KeyStore
from worker.api.edge import ConnectionCounts, EdgeLimits, guarded
from worker.api.pools import RedisPools
from worker.api.settings import ApiSettings
from worker.commands import is_id
from worker.redis_retry import connect

log = logging.getLogger("worker.api")


async def serve(settings: ApiSettings) -> None:
    pools = RedisPools.from_settings(settings)
    limits = edge_limits(settings)
    app = make_app(settings, pools)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.keepalive_s)
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    if settings.metrics_address:  # validated by ApiSettings: host:port
        host, _, port = settings.metrics_address.rpartition(":")
        metrics_runner = web.AppRunner(make_metrics_app(app, settings.metrics_token))
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, host, int(port)).start()
    assert runner.server is not None  # made by setup()
    loop = asyncio.get_running_loop()
    # Not web.TCPSite: every connection goes through the edge's bounds (worker/api/edge.py).
    server = await loop.create_server(
        guarded(runner.server, ConnectionCounts(limits)),
        settings.host,
        settings.port,
        reuse_address=True,
    )
    log.info("api ready", extra={"host": settings.host, "port": settings.port})
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await runner.cleanup()  # closes the open connections too
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await pools.close()


def edge_limits(settings: ApiSettings) -> EdgeLimits:
    return EdgeLimits(
        header_timeout_s=settings.header_timeout_s,
        keepalive_s=settings.keepalive_s,
        max_connections=settings.max_connections,
        max_per_client=settings.max_connections_per_client,
    )


async def manage_keys(settings: ApiSettings, args: argparse.Namespace) -> None:
    redis = connect(settings.redis_url, 2, 5.0)
    store = KeyStore(redis, settings.redis_prefix)
    if args.command == "add-key":
        print(await store.add(args.customer))
    elif args.command == "list-keys":
        for key_id, customer in await store.listing():
            print(f"{key_id}  {customer}")
    elif args.key_id is not None:
        owner = await store.revoke_id(args.key_id)
        print(f"revoked (customer {owner})" if owner else "no such key (or not unique)")
    else:
        key = sys.stdin.readline().strip() if args.key == "-" else args.key
        print("revoked" if await store.revoke(key) else "no such key")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="speaking-api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    add = sub.add_parser("add-key", help="create an API key for a customer")
    add.add_argument("--customer", required=True)
    sub.add_parser("list-keys", help="list the API keys (by id, never the key) and customers")
    revoke = sub.add_parser("revoke-key", help="revoke an API key, by its id or the key itself")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="key_id", help="the key's id, as list-keys shows it")
    which.add_argument(
        "key", nargs="?", help="the key itself ('-': read it from standard input, off ps)"
    )
    args = parser.parse_args()
    if args.command == "add-key" and not is_id(args.customer):
        parser.error(
            f"--customer {args.customer!r} is not a customer id: 1-64 characters, letters, "
            "digits, '.', '_', ':' or '-'"
        )
    try:
        settings = ApiSettings.from_env()
    except ValueError as exc:  # a bad setting: say which, without a traceback
        raise SystemExit(f"speaking-api: {exc}") from None
    if args.command:
        asyncio.run(manage_keys(settings, args))
        return
    logs.configure()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
