"""Benchmark the shared 20 ms clock (``worker.pacer.Pacer``) with N realistic streams.

Each stream's tick does what a session's tick does in production: take the next
160-sample frame, mu-law encode it (``worker.g711``), wrap it in an RTP header
(``RtpPacketizer.packet``) and ``sendto`` it on its own asyncio UDP transport to a
local sink socket. The sink is either read by nobody (the kernel drops what overflows
its buffer, as when Asterisk is slow) or drained by a reader process that counts what
arrived.

Two zero-work probe streams are registered first and last, so each tick records when
it started (first probe) and when the last stream's packet left (last probe). The tick's
scheduled time is recovered from the public schedule: every tick of one ``due()`` burst
sees the same ``next_deadline``, and tick j of a burst of b is due at
``next_deadline - (b - j) * period``.

Run: ``python -m bench.pacer [--streams 1,10,100,500] [--duration 5] [--drain both]``.
Results: ``bench/results/pacer.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import multiprocessing.connection
import selectors
import socket
import time
from dataclasses import asdict, dataclass
from itertools import groupby
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

from bench import percentile, write_results
from worker.g711 import ulaw_encode
from worker.pacer import PERIOD, Pacer, Tickable
from worker.rtp import RtpPacketizer

HOST = "127.0.0.1"
FRAME_SAMPLES = 160


def speech_like_frames(seconds: float = 1.0, rate: int = 8000) -> list[npt.NDArray[np.int16]]:
    """A second of voiced-sounding audio (harmonics, syllable envelope, a little noise)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    x = 6000 * voiced * envelope + 300 * rng.standard_normal(t.size)
    samples = np.clip(x, -32768, 32767).astype(np.int16)
    return list(samples[: samples.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES))


class _Sink(asyncio.DatagramProtocol):
    pass


class _Buffered(Protocol):
    """What asyncio's selector datagram transport has but its type stub does not show."""

    def get_write_buffer_size(self) -> int: ...


class RtpStream:
    """One session's tick: encode a frame, packetize, send on its own UDP transport."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        sink: tuple[str, int],
        frames: list[npt.NDArray[np.int16]],
        offset: int,
    ) -> None:
        self.transport = transport
        self.sink = sink
        self.frames = frames
        self.index = offset
        self.rtp = RtpPacketizer(payload_type=0, samples_per_tick=FRAME_SAMPLES)
        self.sent = 0

    def tick(self) -> None:
        frame = self.frames[self.index % len(self.frames)]
        self.index += 1
        self.transport.sendto(self.rtp.packet(ulaw_encode(frame)), self.sink)
        self.sent += 1


class FirstProbe:
    """Ticked first: records when each tick started and the schedule it belonged to."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.records: list[tuple[float, float]] = []  # (now, schedule.next_deadline)

    def tick(self) -> None:
        schedule = self.pacer.schedule
        assert schedule is not None
        self.records.append((self.pacer.now(), schedule.next_deadline))


class LastProbe:
    """Ticked last: records when the last stream of the tick was done."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.times: list[float] = []

    def tick(self) -> None:
        self.times.append(self.pacer.now())


def scheduled_times(records: list[tuple[float, float]], period: float) -> list[float]:
    """The due time of each recorded tick (see the module docstring)."""
    deadlines: list[float] = []
    for next_deadline, group in groupby(records, key=lambda r: r[1]):
        burst = len(list(group))
        deadlines += [next_deadline - (burst - j) * period for j in range(burst)]
    return deadlines


def _reader(conn: multiprocessing.connection.Connection) -> None:
    """Reader process: bind a sink, report its port, count datagrams until told to stop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    conn.send(sock.getsockname()[1])
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
    selector.register(conn, selectors.EVENT_READ, "conn")
    received = 0
    while True:
        for key, _ in selector.select():
            if key.data == "conn":
                if conn.recv() == "stop":
                    conn.send(received)
                    return
                conn.send(received)  # "count"
                received = 0
                continue
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                received += 1


@dataclass
class Result:
    streams: int
    drain: str
    seconds: float
    ticks: int
    expected_ticks: int
    resyncs: int
    max_lateness_ms: float
    start_lateness_p50_ms: float
    start_lateness_p99_ms: float
    start_lateness_max_ms: float
    end_lateness_p50_ms: float
    end_lateness_p99_ms: float
    end_lateness_max_ms: float
    tick_busy_p50_ms: float
    tick_busy_p99_ms: float
    loop_busy_fraction: float
    cpu_ms_per_tick: float
    cpu_us_per_stream_tick: float
    packets_sent: int
    packets_received: int | None
    transport_buffered_max: int


Reader = tuple[multiprocessing.connection.Connection, int]  # control pipe, sink port


async def run_one(n: int, seconds: float, reader: Reader | None) -> Result:
    loop = asyncio.get_running_loop()
    frames = speech_like_frames()
    sink_socket: socket.socket | None = None
    if reader is None:  # a bound sink nobody reads: the kernel drops once its buffer is full
        sink_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink_socket.bind((HOST, 0))
        sink = sink_socket.getsockname()[:2]
    else:
        reader[0].send("count")  # reset the reader's counter
        reader[0].recv()
        sink = (HOST, reader[1])
    streams: list[RtpStream] = []
    for i in range(n):
        transport, _ = await loop.create_datagram_endpoint(_Sink, local_addr=(HOST, 0))
        streams.append(RtpStream(transport, sink, frames, offset=i * 7))

    pacer = Pacer()
    first, last = FirstProbe(pacer), LastProbe(pacer)
    pacer.start()
    await asyncio.sleep(0)
    gc.collect()
    cpu0 = time.process_time()
    everything: list[Tickable] = [first, *streams, last]
    for tickable in everything:
        pacer.add(tickable)
    buffered_max = 0
    end = loop.time() + seconds
    while loop.time() < end:
        await asyncio.sleep(0.25)
        buffered = sum(cast(_Buffered, s.transport).get_write_buffer_size() for s in streams)
        buffered_max = max(buffered_max, buffered)
    for tickable in everything:
        pacer.remove(tickable)
    cpu = time.process_time() - cpu0
    schedule = pacer.schedule
    assert schedule is not None
    await pacer.stop()

    await asyncio.sleep(0.2)  # let the reader catch up
    received: int | None = None
    if reader is not None:
        reader[0].send("count")
        received = int(reader[0].recv())
    for stream in streams:
        stream.transport.close()
    if sink_socket is not None:
        sink_socket.close()

    due = scheduled_times(first.records, pacer.period)
    ticks = len(first.records)
    starts = [(t - d) * 1000 for (t, _), d in zip(first.records, due, strict=True)]
    ends = [(t - d) * 1000 for t, d in zip(last.times, due, strict=True)]
    busy = [(e - s) * 1000 for (s, _), e in zip(first.records, last.times, strict=True)]
    elapsed = last.times[-1] - first.records[0][0] + pacer.period
    return Result(
        streams=n,
        drain="none" if reader is None else "reader",
        seconds=round(elapsed, 3),
        ticks=ticks,
        expected_ticks=round(elapsed / pacer.period),
        resyncs=schedule.resyncs,
        max_lateness_ms=round(schedule.max_lateness * 1000, 3),
        start_lateness_p50_ms=round(percentile(starts, 50), 3),
        start_lateness_p99_ms=round(percentile(starts, 99), 3),
        start_lateness_max_ms=round(max(starts), 3),
        end_lateness_p50_ms=round(percentile(ends, 50), 3),
        end_lateness_p99_ms=round(percentile(ends, 99), 3),
        end_lateness_max_ms=round(max(ends), 3),
        tick_busy_p50_ms=round(percentile(busy, 50), 3),
        tick_busy_p99_ms=round(percentile(busy, 99), 3),
        loop_busy_fraction=round(sum(busy) / 1000 / elapsed, 4),
        cpu_ms_per_tick=round(cpu / ticks * 1e3, 4),
        cpu_us_per_stream_tick=round(cpu / (ticks * n) * 1e6, 2),
        packets_sent=sum(s.sent for s in streams),
        packets_received=received,
        transport_buffered_max=buffered_max,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,10,100,500", help="comma-separated N values")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--drain", choices=["none", "reader", "both"], default="both")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    drains = ["none", "reader"] if args.drain == "both" else [args.drain]

    reader: Reader | None = None
    process: multiprocessing.process.BaseProcess | None = None
    if "reader" in drains:
        ctx = multiprocessing.get_context("spawn")
        conn, child = ctx.Pipe()
        process = ctx.Process(target=_reader, args=(child,), daemon=True)
        process.start()
        reader = (conn, int(conn.recv()))

    results: list[Result] = []
    header = (
        f"{'N':>4} {'drain':>6} {'ticks':>6} {'resync':>6} "
        f"{'start p50/p99/max ms':>22} {'end p50/p99/max ms':>22} "
        f"{'busy p50/p99 ms':>16} {'cpu us/stream/tick':>18} {'recv/sent':>10}"
    )
    print(f"period {PERIOD * 1000:.0f} ms, {args.duration:g} s per run")
    print(header)
    try:
        for drain in drains:
            for n in counts:
                r = asyncio.run(run_one(n, args.duration, reader if drain == "reader" else None))
                results.append(r)
                recv = (
                    f"{r.packets_received / r.packets_sent:.3f}"
                    if r.packets_received is not None and r.packets_sent
                    else "-"
                )
                print(
                    f"{r.streams:>4} {r.drain:>6} {r.ticks:>6} {r.resyncs:>6} "
                    f"{r.start_lateness_p50_ms:>7.3f}/{r.start_lateness_p99_ms:>6.3f}/"
                    f"{r.start_lateness_max_ms:>7.3f} "
                    f"{r.end_lateness_p50_ms:>7.3f}/{r.end_lateness_p99_ms:>6.3f}/"
                    f"{r.end_lateness_max_ms:>7.3f} "
                    f"{r.tick_busy_p50_ms:>7.3f}/{r.tick_busy_p99_ms:>7.3f} "
                    f"{r.cpu_us_per_stream_tick:>18.2f} {recv:>10}",
                    flush=True,
                )
    finally:
        if reader is not None and process is not None:
            reader[0].send("stop")
            reader[0].recv()
            process.join(5)
    marginal: dict[str, float] = {}
    for drain in drains:
        runs = sorted((r for r in results if r.drain == drain), key=lambda r: r.streams)
        if len(runs) >= 2 and runs[-1].streams > runs[0].streams:
            lo, hi = runs[0], runs[-1]
            per_stream = (hi.cpu_ms_per_tick - lo.cpu_ms_per_tick) / (hi.streams - lo.streams)
            marginal[drain] = round(per_stream * 1000, 2)
            print(
                f"drain={drain}: marginal CPU {per_stream * 1000:.1f} us per stream per tick "
                f"(N={lo.streams}..{hi.streams}); one core saturates near "
                f"{PERIOD * 1000 / per_stream:.0f} streams"
            )
    path = write_results(
        "pacer",
        {
            "period_ms": PERIOD * 1000,
            "duration_s": args.duration,
            "marginal_cpu_us_per_stream_tick": marginal,
            "runs": [asdict(r) for r in results],
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
