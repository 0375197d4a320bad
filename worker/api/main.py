"""``speaking-api``: serve the REST API, or manage API keys.

speaking-api                          serve (settings from SPEAKING_API_* variables)
speaking-api add-key --customer ID    print a new API key for that customer
speaking-api revoke-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from worker import logs
from worker.api.app import make_app
from worker.api.auth import KeyStore
from worker.api.pools import RedisPools
from worker.api.settings import ApiSettings
from worker.commands import is_id
from worker.redis_retry import connect

log = logging.getLogger("worker.api")


async def serve(settings: ApiSettings) -> None:
    pools = RedisPools.from_settings(settings)
    runner = web.AppRunner(make_app(settings, pools), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("api ready", extra={"host": settings.host, "port": settings.port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await pools.close()


async def manage_keys(settings: ApiSettings, args: argparse.Namespace) -> None:
    redis = connect(settings.redis_url, 2, 5.0)
    store = KeyStore(redis, settings.redis_prefix)
    if args.command == "add-key":
        print(await store.add(args.customer))
    else:
        print("revoked" if await store.revoke(args.key) else "no such key")
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
    revoke = sub.add_parser("revoke-key", help="revoke an API key")
    revoke.add_argument("key")
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
