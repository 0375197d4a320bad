"""Benchmark the per-frame audio path: what one 20 ms frame costs from TTS bytes to RTP.

The synthesis side of a session turns the engine's PCM bytes (22,050 Hz, delivered in
realistic 4096-sample chunks) into frames: ``PcmBytes`` -> ``SegmentResampler`` (one
soxr stream for the whole segment) -> ``FrameAssembler``. The clock side turns each
frame into a packet: ``MediaFormat.encode`` (mu-law or big-endian slin16) -> RTP header.
Each stage is timed on its own over a long speech-like segment, then the whole chain in
one loop; costs are per 20 ms frame of output. The real-time factor is 20 ms divided by
the CPU cost of a frame: the number of concurrent sessions one core could feed with this
path alone (synthesis itself, the event loop and the UDP send are not included; see
``bench.pacer`` for the clock side with the send).

Run: ``python -m bench.pipeline [--seconds 30] [--repeat 5]``.
Results: ``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from bench import percentile, write_results
from worker.framing import FrameAssembler, PcmBytes
from worker.media_format import FRAME_MS, MediaFormat
from worker.resample import SegmentResampler
from worker.rtp import RtpPacketizer

ENGINE_RATE = 22_050
CHUNK_SAMPLES = 4096

Samples = npt.NDArray[np.int16]


def speech_like(seconds: float, rate: int = ENGINE_RATE) -> Samples:
    """Voiced-sounding audio with syllable envelope, pauses and noisy (fricative) bursts."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    syllables = np.sin(2 * np.pi * 3 * t) ** 2
    pauses = (np.sin(2 * np.pi * 0.3 * t) > -0.8).astype(np.float64)
    fricative = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0.9)
    x = (5000 * voiced * syllables + 2500 * fricative) * pauses
    return np.clip(x, -32768, 32767).astype(np.int16)


def byte_chunks(samples: Samples) -> list[bytes]:
    """The engine's output: 4096-sample chunks of little-endian bytes, each cut mid-sample."""
    data = samples.astype("<i2").tobytes()
    cuts = [0, *range(CHUNK_SAMPLES * 2 + 1, len(data), CHUNK_SAMPLES * 2), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts)]


@dataclass
class Stage:
    name: str
    us_per_frame: float  # median over repeats, CPU time
    us_per_frame_min: float
    wall_us_per_frame: float


def timed(repeat: int, frames: int, run: Callable[[], object]) -> tuple[float, float, float]:
    """(median CPU us, min CPU us, median wall us) per output frame over ``repeat`` runs."""
    cpu: list[float] = []
    wall: list[float] = []
    run()  # warm-up (tables, allocator, soxr plan)
    for _ in range(repeat):
        c0, w0 = time.process_time_ns(), time.perf_counter_ns()
        run()
        cpu.append((time.process_time_ns() - c0) / 1000 / frames)
        wall.append((time.perf_counter_ns() - w0) / 1000 / frames)
    return percentile(cpu, 50), min(cpu), percentile(wall, 50)


def bench_format(fmt: MediaFormat, audio: Samples, repeat: int) -> dict[str, object]:
    chunks_bytes = byte_chunks(audio)
    pcm = PcmBytes()
    chunks = [pcm.feed(c) for c in chunks_bytes]
    r = SegmentResampler(ENGINE_RATE, fmt.rate)
    resampled = [r.feed(c) for c in chunks] + [r.finish()]
    asm = FrameAssembler(fmt.samples_per_frame)
    frames = [f for c in resampled for f in asm.feed(c)] + asm.finish()
    payloads = [fmt.encode(f) for f in frames]
    n = len(frames)

    def stage_pcm() -> object:
        p = PcmBytes()
        return [p.feed(c) for c in chunks_bytes]

    def stage_resample() -> object:
        rs = SegmentResampler(ENGINE_RATE, fmt.rate)
        return [rs.feed(c) for c in chunks] + [rs.finish()]

    def stage_framing() -> object:
        a = FrameAssembler(fmt.samples_per_frame)
        return [a.feed(c) for c in resampled] + [a.finish()]

    def stage_encode() -> object:
        return [fmt.encode(f) for f in frames]

    def stage_rtp() -> object:
        rtp = RtpPacketizer(fmt.payload_type, fmt.samples_per_frame)
        return [rtp.packet(p) for p in payloads]

    def chain() -> object:
        p = PcmBytes()
        rs = SegmentResampler(ENGINE_RATE, fmt.rate)
        a = FrameAssembler(fmt.samples_per_frame)
        rtp = RtpPacketizer(fmt.payload_type, fmt.samples_per_frame)
        out: list[bytes] = []
        for c in chunks_bytes:
            for f in a.feed(rs.feed(p.feed(c))):
                out.append(rtp.packet(fmt.encode(f)))
        for f in a.feed(rs.finish()) + a.finish():
            out.append(rtp.packet(fmt.encode(f)))
        assert len(out) == n
        return out

    stages = [
        Stage(name, *timed(repeat, n, run))
        for name, run in [
            ("pcm_bytes", stage_pcm),
            ("resample", stage_resample),
            ("framing", stage_framing),
            ("encode", stage_encode),
            ("rtp_header", stage_rtp),
            ("whole_chain", chain),
        ]
    ]
    whole = stages[-1]
    parts = sum(s.us_per_frame for s in stages[:-1])
    rtf = FRAME_MS * 1000 / whole.us_per_frame
    return {
        "format": fmt.asterisk_name,
        "route": f"{ENGINE_RATE}->{fmt.rate} Hz",
        "frames": n,
        "stages": [asdict(s) for s in stages],
        "sum_of_stages_us_per_frame": round(parts, 3),
        "real_time_factor": round(rtf, 1),
        "sessions_per_core": int(rtf),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per stage")
    args = parser.parse_args()
    audio = speech_like(args.seconds)
    results = []
    for fmt in (MediaFormat.ULAW, MediaFormat.SLIN16):
        res = bench_format(fmt, audio, args.repeat)
        results.append(res)
        print(f"{res['format']} ({res['route']}, {res['frames']} frames of {FRAME_MS} ms)")
        print(f"  {'stage':<12} {'cpu us/frame':>13} {'min':>8} {'wall':>8}")
        stages = res["stages"]
        assert isinstance(stages, list)
        for s in stages:
            print(
                f"  {s['name']:<12} {s['us_per_frame']:>13.2f} "
                f"{s['us_per_frame_min']:>8.2f} {s['wall_us_per_frame']:>8.2f}"
            )
        print(
            f"  real-time factor {res['real_time_factor']}x: one core feeds about "
            f"{res['sessions_per_core']} sessions on this path"
        )
    path = write_results(
        "pipeline",
        {
            "engine_rate": ENGINE_RATE,
            "chunk_samples": CHUNK_SAMPLES,
            "audio_seconds": args.seconds,
            "repeat": args.repeat,
            "formats": results,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
