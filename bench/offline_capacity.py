"""How many concurrent sessions each offline voice family (piper, espeak-ng) keeps in
real time on this machine.

Both engines run on this machine's CPU (piper: onnxruntime on a pool of two threads;
espeak-ng: one thread for the whole process), so unlike a cloud provider their capacity
is a property of the box. For each family and N = 1, 2, 4, 8, ... until a run no longer
keeps up, two runs with N sessions at once, all in one event loop as the worker does,
sharing one ``OfflineEngine`` (the worker has one):

* **paced**: the worker's real playback path (SessionPlayback -> Player -> the offline
  synthesis -> resample/frame -> Playout -> the shared Pacer -> a UDP socket nobody
  reads). Every session says ``--says`` paragraphs back to back, all starting together
  (the worst case: N callers greeted at once). A probe on the clock counts the ticks
  where a session's segment had started but its Playout was empty: each is 20 ms of
  silence inside speech, a gap its caller hears. Also: say -> first frame sent.
* **unpaced**: the same syntheses drained as fast as they come (no clock), giving each
  stream's real-time factor (seconds of audio produced per wall second); below 1 a
  stream cannot keep up whatever the buffering.

N keeps real time when no paced session had a gap and the clock never had to skip
ticks. ``--busy-cores`` runs that many CPU-burning processes beside the bench, standing
in for Asterisk's share of the box. Prints a table per family and writes
bench/results/offline-capacity.json.

    python -m bench.offline_capacity [--families piper,espeak] [--says 2] [--busy-cores 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.latency import percentiles
from worker.engines.base import Synthesis
from worker.engines.offline import OfflineEngine
from worker.events import EventType
from worker.media_format import MediaFormat
from worker.metrics import Registry
from worker.pacer import Pacer
from worker.playout import Playout
from worker.session_messages import SegmentEvent
from worker.session_playback import SessionPlayback, describe_playback_metrics

RESULTS = Path(__file__).parent / "results" / "offline-capacity.json"
VOICES = {"piper": "en_US-joe-medium", "espeak": "espeak"}
#: Three sentences, about 7 s of speech with either voice: a typical prompt.
TEXT = (
    "Thank you for calling the customer service line. Your call is important to us, "
    "and an agent will be with you shortly. Please stay on the line."
)
#: A paced run that has not finished after this many times its audio did not keep up.
DEADLINE_FACTOR = 4.0


def busy_jiffies() -> int:
    """CPU time the whole box has spent busy (all processes), in clock ticks."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return sum(fields[:8]) - idle - iowait


class CpuShare:
    """This process's and everyone else's CPU over a run, in cores: the box is shared,
    and a run that had to compete with other work says so."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._box, self._own, self._wall = busy_jiffies(), time.process_time(), time.perf_counter()

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        box = (busy_jiffies() - self._box) / self._tick / wall
        own = (time.process_time() - self._own) / wall
        return {"bench_cores": round(own, 2), "other_cores": round(max(0.0, box - own), 2)}


@dataclass
class GapProbe:
    """Ticks one session's Playout for the clock, counting the ticks where its current
    segment has started but nothing is queued: silence inside speech."""

    playout: Playout
    in_segment: bool = False
    gap_ticks: int = 0

    def tick(self) -> None:
        if self.in_segment and len(self.playout) == 0:
            self.gap_ticks += 1
        self.playout.tick()


@dataclass
class SessionResult:
    first_audio_ms: list[float] = field(default_factory=list)
    gap_ticks: int = 0
    frames: int = 0
    finished: int = 0


async def paced_session(
    synthesis: Synthesis, pacer: Pacer, sink: tuple[str, int], says: int, go: asyncio.Event
) -> SessionResult:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=sink)
    result = SessionResult()
    done: dict[str, asyncio.Event] = {}
    probe: GapProbe | None = None

    def post(event: SegmentEvent) -> None:
        # Called from inside the tick, so the probe sees the state of this very frame.
        if probe is None:
            return
        if event.kind is EventType.SEGMENT_STARTED:
            probe.in_segment = True
            result.first_audio_ms.append(float(event.data["latency_ms"]))
        elif event.kind in (
            EventType.SEGMENT_FINISHED,
            EventType.SEGMENT_FAILED,
            EventType.SEGMENT_FLUSHED,
        ):
            probe.in_segment = False
            if event.kind is EventType.SEGMENT_FINISHED:
                result.finished += 1
            done[event.segment_id].set()

    metrics = Registry()
    describe_playback_metrics(metrics)
    playback = SessionPlayback(
        MediaFormat.ULAW, transport.sendto, True, [synthesis], pacer, metrics, post
    )
    # The probe ticks the Playout in its place on the shared clock.
    pacer.remove(playback.playout)
    probe = GapProbe(playback.playout)
    pacer.add(probe)
    try:
        await go.wait()
        for n in range(says):
            segment_id = f"s{n}"
            done[segment_id] = asyncio.Event()
            playback.enqueue(segment_id, TEXT)
            await done[segment_id].wait()
    finally:
        pacer.remove(probe)
        result.gap_ticks = probe.gap_ticks
        result.frames = playback.playout.frames_sent
        await playback.close("stop")
        transport.close()
    return result


async def paced_run(engine: OfflineEngine, voice_id: str, n: int, says: int) -> dict[str, Any]:
    syntheses = [engine.open(engine.resolve_voice("en-US", voice_id), 8000) for _ in range(n)]
    for synthesis in syntheses:
        await synthesis.prepare()
    sink_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink_socket.bind(("127.0.0.1", 0))  # the kernel drops what nobody reads
    pacer = Pacer()
    pacer.start()
    go = asyncio.Event()
    tasks = [
        asyncio.create_task(paced_session(s, pacer, sink_socket.getsockname(), says, go))
        for s in syntheses
    ]
    await asyncio.sleep(0.2)  # every session on the clock before the first say
    cpu, started = CpuShare(), time.perf_counter()
    go.set()
    # The audio takes about 7 s per paragraph; a run this far behind has failed anyway.
    _, late = await asyncio.wait(tasks, timeout=DEADLINE_FACTOR * 7.5 * says + 5)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    wall = time.perf_counter() - started
    share = cpu.read()
    schedule = pacer.schedule
    resyncs = schedule.resyncs if schedule else 0
    max_lateness_ms = round(schedule.max_lateness * 1000, 1) if schedule else 0.0
    await pacer.stop()
    sink_socket.close()
    results = [t.result() for t in tasks if t not in late]
    first_audio = [ms for r in results for ms in r.first_audio_ms]
    gapped = sum(1 for r in results if r.gap_ticks) + len(late)
    return {
        "sessions": n,
        "unfinished": len(late),
        "streams_with_gaps": gapped,
        "gap_ms_total": sum(r.gap_ticks for r in results) * 20,
        "gap_ms_max_per_stream": max((r.gap_ticks for r in results), default=0) * 20,
        "audio_s_played": round(sum(r.frames for r in results) * 0.02, 1),
        "first_audio_ms": percentiles(first_audio) if first_audio else {},
        "clock_resyncs": resyncs,
        "clock_max_lateness_ms": max_lateness_ms,
        "wall_s": round(wall, 1),
        **share,
        "real_time": not late and gapped == 0 and resyncs == 0,
    }


async def drain(synthesis: Synthesis, says: int) -> tuple[float, float, float]:
    """(audio seconds, wall seconds, first chunk ms) of ``says`` paragraphs, unpaced."""
    started = time.perf_counter()
    first = 0.0
    samples = 0
    for _ in range(says):
        for piece in synthesis.split(TEXT):
            async for chunk in synthesis.stream(piece):
                samples += len(chunk) // 2
                if not first:
                    first = time.perf_counter() - started
    return samples / synthesis.rate, time.perf_counter() - started, first * 1000


async def unpaced_run(engine: OfflineEngine, voice_id: str, n: int, says: int) -> dict[str, Any]:
    syntheses = [engine.open(engine.resolve_voice("en-US", voice_id), 8000) for _ in range(n)]
    for synthesis in syntheses:
        await synthesis.prepare()
    cpu, started = CpuShare(), time.perf_counter()
    runs = await asyncio.gather(*(drain(s, says) for s in syntheses))
    wall = time.perf_counter() - started
    share = cpu.read()
    per_stream = sorted(audio / w for audio, w, _ in runs)
    return {
        "sessions": n,
        "aggregate_rtf": round(sum(audio for audio, _, _ in runs) / wall, 1),
        "per_stream_rtf_min": round(per_stream[0], 2),
        "per_stream_rtf_p50": round(per_stream[len(per_stream) // 2], 2),
        "first_chunk_ms": percentiles([first for _, _, first in runs]),
        "wall_s": round(wall, 1),
        **share,
    }


def burn() -> None:
    while True:
        pass


async def family(engine: OfflineEngine, name: str, says: int, limit: int) -> dict[str, Any]:
    voice_id = VOICES[name]
    await unpaced_run(engine, voice_id, 1, 1)  # warm: model loaded, caches hot
    rows: list[dict[str, Any]] = []
    n, capacity, failed_at = 1, 0, 0
    while n <= limit:
        paced = await paced_run(engine, voice_id, n, says)
        unpaced = await unpaced_run(engine, voice_id, n, says)
        rows.append({"paced": paced, "unpaced": unpaced})
        fa = paced["first_audio_ms"]
        print(
            f"  {name:6} N={n:4}  rtf aggregate {unpaced['aggregate_rtf']:7.1f}  per stream min "
            f"{unpaced['per_stream_rtf_min']:6.2f}  first audio p50 {fa.get('p50', 0):7.1f} "
            f"p99 {fa.get('p99', 0):7.1f} ms  gaps: {paced['streams_with_gaps']:3}/{n} streams "
            f"{paced['gap_ms_total']:6} ms  resyncs {paced['clock_resyncs']}  "
            f"cpu {paced['bench_cores']:.2f} (others {paced['other_cores']:.2f}) cores  "
            f"{'real time' if paced['real_time'] else 'BEHIND'}"
        )
        if not paced["real_time"]:
            failed_at = n
            break
        capacity = n
        n *= 2
    # Between the last N that kept up and the first that did not, bisect.
    low, high = capacity, failed_at
    while failed_at and high - low > 1:
        middle = (low + high) // 2
        paced = await paced_run(engine, voice_id, middle, says)
        rows.append({"paced": paced})
        print(
            f"  {name:6} N={middle:4}  (bisect) gaps: {paced['streams_with_gaps']:3}/{middle} "
            f"streams  resyncs {paced['clock_resyncs']}  others {paced['other_cores']:.2f} cores  "
            f"{'real time' if paced['real_time'] else 'BEHIND'}"
        )
        if paced["real_time"]:
            low = middle
        else:
            high = middle
    capacity = low
    if failed_at:
        print(f"  {name}: at most {capacity} sessions in real time")
    else:
        print(f"  {name}: {capacity} sessions kept real time; --limit stopped the search")
    return {
        "voice": voice_id,
        "runs": rows,
        "max_real_time_sessions": capacity,
        "limit_reached": not failed_at,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", default="piper,espeak")
    parser.add_argument("--says", type=int, default=2, help="paragraphs per session")
    parser.add_argument("--limit", type=int, default=1024, help="largest N tried")
    parser.add_argument("--busy-cores", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.busy_cores)]
    for burner in burners:
        burner.start()
    engine = OfflineEngine()
    results: dict[str, Any] = {}
    try:
        for name in args.families.split(","):
            results[name] = await family(engine, name, args.says, args.limit)
    finally:
        for burner in burners:
            burner.terminate()
            burner.join(5)
    previous: dict[str, Any] = {}
    if args.out.exists():  # runs with other --busy-cores are kept side by side
        previous = json.loads(args.out.read_text()).get("by_busy_cores", {})
    previous[str(args.busy_cores)] = {"says_per_session": args.says, "families": results}
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "text": TEXT,
                "by_busy_cores": previous,
            },
            indent=2,
        )
    )
    summary = {name: r["max_real_time_sessions"] for name, r in results.items()}
    print(f"busy cores {args.busy_cores}: max real-time sessions {summary}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
