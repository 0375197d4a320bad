"""How well a captured RTP stream kept time: frames lost, duplicated and late, and the
inter-arrival jitter, from the packets' sequence numbers, timestamps and capture times.

Used by bench/load.py on what the worker sent to Asterisk (captured on loopback, so
the network adds nothing: this is the worker's own timing).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: A frame more than one frame behind its place in the stream's schedule is late.
LATE_S = 0.020


@dataclass(frozen=True)
class Sent:
    """One captured packet: when it was seen, and its RTP sequence number and timestamp."""

    arrival: float
    seq: int
    timestamp: int


@dataclass(frozen=True)
class Quality:
    frames: int
    lost: int  # sequence numbers never seen between the first and the last
    duplicated: int  # sequence numbers seen more than once
    late: int  # frames more than LATE_S behind the stream's schedule
    #: |arrival gap - timestamp gap| between consecutive frames, seconds.
    jitter: list[float]


def quality(packets: Sequence[Sent], rate: int) -> Quality:
    """The stream's timing. Its schedule is the RTP timestamp (``rate`` Hz) anchored at
    the packet that came earliest relative to it, so lateness is never negative."""
    if not packets:
        return Quality(0, 0, 0, 0, [])
    ordered = sorted(packets, key=lambda p: p.arrival)
    seen: set[int] = set()
    duplicated = 0
    for p in ordered:  # sequence numbers wrap at 16 bits: counted from the first
        relative = (p.seq - ordered[0].seq + 2**15) % 2**16 - 2**15
        if relative in seen:
            duplicated += 1
        seen.add(relative)
    unique = sorted(seen)
    lost = unique[-1] - unique[0] + 1 - len(unique)
    first_ts = ordered[0].timestamp
    offsets = [p.arrival - _ticks(first_ts, p.timestamp) / rate for p in ordered]
    anchor = min(offsets)
    late = sum(1 for o in offsets if o - anchor > LATE_S)
    jitter = [
        abs((b.arrival - a.arrival) - _ticks(a.timestamp, b.timestamp) / rate)
        for a, b in itertools.pairwise(ordered)
    ]
    return Quality(len(ordered), lost, duplicated, late, jitter)


def _ticks(a: int, b: int) -> int:
    """b - a in RTP timestamp units, across a 32-bit wrap, signed."""
    return ((b - a + 2**31) % 2**32) - 2**31


def combined(streams: Iterable[Quality]) -> dict[str, object]:
    """Totals over streams, with the jitter's percentiles in milliseconds."""
    all_streams = list(streams)
    jitter = sorted(j * 1000 for q in all_streams for j in q.jitter)

    def pct(p: float) -> float:
        return round(jitter[min(len(jitter) - 1, int(p * len(jitter)))], 2) if jitter else 0.0

    return {
        "streams": len(all_streams),
        "frames": sum(q.frames for q in all_streams),
        "lost": sum(q.lost for q in all_streams),
        "duplicated": sum(q.duplicated for q in all_streams),
        "late": sum(q.late for q in all_streams),
        "jitter_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": jitter[-1] if jitter else 0.0},
    }
