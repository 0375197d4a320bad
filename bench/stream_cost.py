"""A streaming session's cost in the worker on the whole path, engine PCM to socket: the
pipeline (bench/pipeline.py) and the clock (bench/pacer.py) in one loop, as a figure of
core-ms per second of audio and bytes per session.

N sessions in one event loop, as in the worker. Each has a producer task doing what
worker/player.py does with an engine's output: 22,050 Hz PCM bytes in 4,096-sample
chunks cut mid-sample -> PcmBytes -> SegmentResampler (one soxr stream per segment) ->
FrameAssembler -> Frames -> Playout.push, waiting on the Playout's back-pressure. The one
shared Pacer ticks every Playout each 20 ms; each frame goes out as RTP from the
session's own UDP socket (worker/rtp_socket.py) to a sink nobody reads (the kernel
drops what overflows). Synthesis itself, Redis and ARI are not included.

Per N: core-ms of process CPU per second of audio per session (over a window where
every session streams), the sessions one core would carry, the clock's worst lateness
and resyncs, and RSS per session idle (a Playout and its socket, nothing queued) and
streaming (its Playout buffer full: 150 frames ahead). RSS moves in allocator-sized
steps, so a separate run at N=50 under tracemalloc also gives the Python heap per
session, idle and streaming, to which each soxr stream adds its C state (measured by
RSS over 200 streams).

    python -m bench.stream_cost [--sessions 1,50,200,500] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench import write_results
from bench.pipeline import byte_chunks, speech_like
from worker.framing import FrameAssembler, PcmBytes
from worker.media_format import MediaFormat
from worker.pacer import Pacer
from worker.playout import Frame, Playout, PlayoutEvent
from worker.resample import SegmentResampler
from worker.rtp_socket import RtpSocket

ENGINE_RATE = 22_050
SEGMENT_SECONDS = 6.0
WARM_UP_S = 3.5  # every Playout is full after 150 frames (3 s) of being fed ahead


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def produce(playout: Playout, chunks: list[bytes], stop: asyncio.Event) -> None:
    """One session's player: segment after segment of the same engine output."""
    fmt = playout.fmt
    n = 0
    while not stop.is_set():
        n += 1
        segment = f"s{n}"
        pcm, resampler = PcmBytes(), SegmentResampler(ENGINE_RATE, fmt.rate)
        assembler = FrameAssembler(fmt.samples_per_frame)
        first = True
        for chunk in chunks:
            rows = assembler.feed(resampler.feed(pcm.feed(chunk)))
            frames = [Frame(r, segment, first=first and i == 0) for i, r in enumerate(rows)]
            first = first and not frames
            if frames:
                await playout.wait_for_space()
                playout.push(frames)
            if stop.is_set():
                return


def ignore(_event: PlayoutEvent) -> None:
    pass


class Rig:
    """A sink nobody reads, the shared clock, and the sessions (``open``) with their
    producers (``produce``); ``close`` undoes all of it. Made inside the event loop."""

    def __init__(self) -> None:
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.pacer = Pacer()
        self.pacer.start()
        self.sockets: list[RtpSocket] = []
        self.playouts: list[Playout] = []
        self.stop = asyncio.Event()
        self.producers: list[asyncio.Task[None]] = []

    async def open(self, n: int) -> None:
        for _ in range(n):
            rtp = await RtpSocket.open("127.0.0.1")
            rtp.remote = self.sink.getsockname()
            self.sockets.append(rtp)
            playout = Playout(MediaFormat.ULAW, rtp.send, ignore, time.monotonic)
            self.playouts.append(playout)
            self.pacer.add(playout)

    def produce(self, chunks: list[bytes]) -> None:
        self.producers = [asyncio.create_task(produce(p, chunks, self.stop)) for p in self.playouts]

    async def close(self) -> None:
        self.stop.set()
        for task in self.producers:
            task.cancel()
        await asyncio.gather(*self.producers, return_exceptions=True)
        await self.pacer.stop()
        for rtp in self.sockets:
            rtp.close()
        self.sink.close()


async def run(n: int, seconds: float, chunks: list[bytes]) -> dict[str, float | int]:
    rig = Rig()
    gc.collect()
    base = rss_kb()
    await rig.open(n)
    gc.collect()
    idle = rss_kb()
    rig.produce(chunks)
    await asyncio.sleep(WARM_UP_S)
    streaming = rss_kb()
    sent0 = sum(p.frames_sent for p in rig.playouts)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    sent = sum(p.frames_sent for p in rig.playouts) - sent0
    schedule = rig.pacer.schedule
    assert schedule is not None, "the pacer runs"
    lateness, resyncs = schedule.max_lateness, schedule.resyncs
    await rig.close()
    audio_s = sent * 0.020  # what was really sent, not what should have been
    per_audio_s = cpu * 1000 / audio_s
    return {
        "sessions": n,
        "window_s": round(wall, 2),
        "frames_sent": sent,
        "frames_expected": int(n * wall / 0.020),
        "core_ms_per_audio_s": round(per_audio_s, 3),
        "sessions_per_core": int(1000 / per_audio_s),
        "pacer_max_lateness_ms": round(lateness * 1000, 2),
        "pacer_resyncs": resyncs,
        "kb_per_idle_session": round((idle - base) / n, 1),
        "kb_per_streaming_session": round((streaming - base) / n, 1),
    }


async def heap(n: int, chunks: list[bytes]) -> dict[str, float]:
    """Python heap per session (tracemalloc) idle and streaming; soxr's C state apart."""
    rig = Rig()
    tracemalloc.start()
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    await rig.open(n)
    gc.collect()
    idle = tracemalloc.get_traced_memory()[0]
    rig.produce(chunks)
    await asyncio.sleep(WARM_UP_S)
    gc.collect()
    streaming = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    await rig.close()
    return {
        "sessions": n,
        "heap_kb_per_idle_session": round((idle - base) / n / 1024, 1),
        "heap_kb_per_streaming_session": round((streaming - base) / n / 1024, 1),
    }


def soxr_state_kb() -> float:
    """RSS per live soxr stream (22,050 -> 8,000 Hz, fed once): its C state, invisible to
    tracemalloc. Measured first, in a fresh process: memory freed earlier and kept by
    the allocator would make it look smaller."""
    gc.collect()
    before = rss_kb()
    streams = [SegmentResampler(ENGINE_RATE, 8000) for _ in range(200)]
    rng = np.random.default_rng(0)
    for s in streams:
        s.feed((rng.standard_normal(4096) * 3000).astype(np.int16))
    kb = (rss_kb() - before) / len(streams)
    del streams
    return round(kb, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,50,200,500", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per N")
    args = parser.parse_args()
    soxr_kb = soxr_state_kb()
    chunks = byte_chunks(speech_like(SEGMENT_SECONDS))
    print(
        f"{'N':>4} {'core-ms/audio s':>16} {'sessions/core':>14} {'sent/expected':>14} "
        f"{'max late ms':>12} {'resyncs':>8} {'KB idle':>8} {'KB streaming':>13}"
    )
    results = []
    for n in (int(v) for v in args.sessions.split(",")):
        r = asyncio.run(run(n, args.seconds, chunks))
        results.append(r)
        print(
            f"{r['sessions']:>4} {r['core_ms_per_audio_s']:>16} {r['sessions_per_core']:>14} "
            f"{r['frames_sent'] / r['frames_expected']:>14.3f} {r['pacer_max_lateness_ms']:>12} "
            f"{r['pacer_resyncs']:>8} {r['kb_per_idle_session']:>8} "
            f"{r['kb_per_streaming_session']:>13}"
        )
    memory = {**asyncio.run(heap(50, chunks)), "soxr_kb_per_stream": soxr_kb}
    print(
        f"memory at N=50: Python heap {memory['heap_kb_per_idle_session']} KB idle, "
        f"{memory['heap_kb_per_streaming_session']} KB streaming per session, plus "
        f"{memory['soxr_kb_per_stream']} KB of soxr state per streaming session"
    )
    data = {"engine_rate": ENGINE_RATE, "runs": results, "memory": memory}
    path = write_results("stream-cost", data)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
