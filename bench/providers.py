"""The worker's own overhead per provider: say -> first frame sent, minus the provider's
time to first audio, at 1 and at 100 concurrent sessions.

Each provider's real SDK talks to its local fake (tests/providers, in a process of its
own, with ``--first-byte-ms`` of delay before each reply's first audio). The sessions
are the worker's real playback path in this process: SessionPlayback -> Player -> the
engine's synthesis -> resample/frame -> Playout -> the shared Pacer -> a UDP socket.
Each session says ``--says`` sentences one after another, starting at a random moment of
the first 3 s and pausing up to 1 s between says. Prints p50/p99/max per
provider and concurrency, and writes bench/results/providers.json.

    python -m bench.providers [--sessions 1,100] [--says 10] [--first-byte-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench.latency import percentiles
from tests.conftest import ROOT
from worker.engines.base import Engine
from worker.engines.elevenlabs import ElevenLabsEngine, ElevenLabsSettings
from worker.engines.gcp import GcpEngine, GcpSettings
from worker.engines.polly import PollyEngine, PollySettings
from worker.events import EventType
from worker.media_format import MediaFormat
from worker.metrics import Registry
from worker.pacer import Pacer
from worker.session_messages import SegmentEvent
from worker.session_playback import SessionPlayback, describe_playback_metrics

RESULTS = Path(__file__).parent / "results" / "providers.json"
KEY = "bench-key"
TEXT = "Thank you for calling, how can I help you today?"


async def start_fakes(first_byte_ms: int) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.providers.serve",
        "--api-key",
        KEY,
        "--first-byte-ms",
        str(first_byte_ms),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        urls: dict[str, str] = json.loads(await process.stdout.readline())
    return process, urls


def engines(urls: dict[str, str], sessions: int) -> dict[str, Engine]:
    connections = max(8, sessions)
    return {
        "elevenlabs": ElevenLabsEngine(
            ElevenLabsSettings(KEY, base_url=urls["elevenlabs"], max_connections=connections)
        ),
        "elevenlabs-ws": ElevenLabsEngine(
            ElevenLabsSettings(KEY, base_url=urls["elevenlabs"], mode="websocket")
        ),
        "gcp": GcpEngine(GcpSettings(endpoint=urls["gcp"], insecure=True)),
        "aws": PollyEngine(
            PollySettings(
                endpoint_url=urls["polly"],
                access_key_id="bench",
                secret_access_key="bench",
                max_connections=connections,
            )
        ),
    }


async def one_session(
    engine: Engine, pacer: Pacer, sink: tuple[str, int], says: int, overheads: list[float]
) -> None:
    """A session saying ``says`` sentences one after another; each one's overhead in ms."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=sink)
    synthesis = engine.open(engine.resolve_voice("en-US", ""), 8000)
    await synthesis.prepare()
    done: dict[str, asyncio.Event] = {}

    def post(event: SegmentEvent) -> None:
        if event.kind is EventType.SEGMENT_STARTED and "first_byte_ms" in event.data:
            overheads.append(float(event.data["latency_ms"]) - float(event.data["first_byte_ms"]))
        if event.kind in (EventType.SEGMENT_FINISHED, EventType.SEGMENT_FAILED):
            done[event.segment_id].set()

    metrics = Registry()
    describe_playback_metrics(metrics)
    playback = SessionPlayback(
        MediaFormat.ULAW, transport.sendto, True, [synthesis], pacer, metrics, post
    )
    try:
        # Concurrent, not in lockstep: like calls, sessions start and speak at their own
        # times (a random start within 3 s, a pause of up to 1 s between says).
        await asyncio.sleep(random.uniform(0, 3))
        for n in range(says):
            await asyncio.sleep(random.uniform(0, 1))
            segment_id = f"s{n}"
            done[segment_id] = asyncio.Event()
            playback.enqueue(segment_id, TEXT)
            async with asyncio.timeout(60):
                await done[segment_id].wait()
    finally:
        await playback.close("stop")
        await synthesis.close()
        transport.close()


async def measure(name: str, engine: Engine, sessions: int, says: int) -> dict[str, Any]:
    sink_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink_socket.bind(("127.0.0.1", 0))  # the kernel drops what nobody reads
    pacer = Pacer()
    pacer.start()
    overheads: list[float] = []
    started = time.perf_counter()
    try:
        sink = sink_socket.getsockname()
        await asyncio.gather(
            *(one_session(engine, pacer, sink, says, overheads) for _ in range(sessions))
        )
    finally:
        await pacer.stop()
        sink_socket.close()
    result = percentiles(overheads)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(
        f"  {name:14} {sessions:4} sessions  overhead ms  p50 {result['p50']:6.1f}  "
        f"p99 {result['p99']:6.1f}  max {result['max']:6.1f}  (n={result['n']})"
    )
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", default="1,100")
    parser.add_argument("--says", type=int, default=10)
    parser.add_argument("--first-byte-ms", type=int, default=50)
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    process, urls = await start_fakes(args.first_byte_ms)
    results: dict[str, Any] = {}
    try:
        for count in counts:
            for name, engine in engines(urls, count).items():
                key = f"{name}@{count}"
                results[key] = await measure(name, engine, count, args.says)
    finally:
        process.terminate()
        await process.wait()
    ratios = {
        name: round(
            results[f"{name}@{counts[-1]}"]["p99"]
            / max(results[f"{name}@{counts[0]}"]["p99"], 0.1),
            2,
        )
        for name in engines(urls, 1)
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "first_byte_ms": args.first_byte_ms,
                "says_per_session": args.says,
                "overhead_ms": results,
                "p99_ratio_most_to_fewest_sessions": ratios,
            },
            indent=2,
        )
    )
    print(f"p99 ratio {counts[-1]} vs {counts[0]} sessions: {ratios}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
