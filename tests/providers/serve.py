"""Run the three fake providers in one process, for tests that start the product apart.

    python -m tests.providers.serve --elevenlabs-port 0 --gcp-port 0 --polly-port 0 \
        [--first-byte-ms N] [--api-key K] [--gcp-idle-timeout S]

Port 0 picks a free port. Once all three listen, one JSON line goes to stdout::

    {"elevenlabs": "http://127.0.0.1:P", "gcp": "127.0.0.1:P", "polly": "http://127.0.0.1:P"}

then it serves until SIGTERM or SIGINT and exits 0. These are stand-ins for providers
that cannot be reached from here (see each fake's docstring).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from tests.providers.fake_elevenlabs import FakeElevenLabs
from tests.providers.fake_gcp import FakeGcp
from tests.providers.fake_polly import FakePolly


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.providers.serve")
    parser.add_argument("--elevenlabs-port", type=int, default=0)
    parser.add_argument("--gcp-port", type=int, default=0)
    parser.add_argument("--polly-port", type=int, default=0)
    parser.add_argument("--first-byte-ms", type=int, default=0)
    parser.add_argument("--api-key", action="append", help="valid ElevenLabs key (repeatable)")
    parser.add_argument("--gcp-idle-timeout", type=float, default=5.0)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start the fakes, announce them, and serve until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    elevenlabs = FakeElevenLabs(
        api_key=args.api_key or "test-key", first_byte_ms=args.first_byte_ms
    )
    gcp = FakeGcp(first_byte_ms=args.first_byte_ms, idle_timeout_s=args.gcp_idle_timeout)
    polly = FakePolly(first_byte_ms=args.first_byte_ms)
    try:
        urls = {
            "elevenlabs": await elevenlabs.start(args.elevenlabs_port),
            "gcp": await gcp.start(args.gcp_port),
            "polly": await polly.start(args.polly_port),
        }
        sys.stdout.write(json.dumps(urls) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        # Bounded: a stop signal must end the process promptly even if a close hangs.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await asyncio.gather(elevenlabs.close(), gcp.close(), polly.close())


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(_arguments(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
