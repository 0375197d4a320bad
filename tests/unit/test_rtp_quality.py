"""The load bench's stream timing measure (bench/rtp_quality.py) on made-up streams."""

from __future__ import annotations

from bench.rtp_quality import Sent, combined, quality


def stream(n: int, start: float = 100.0) -> list[Sent]:
    return [Sent(start + i * 0.020, 1000 + i, 160 * i) for i in range(n)]


def test_a_perfect_stream_has_no_fault() -> None:
    q = quality(stream(50), 8000)
    assert (q.frames, q.lost, q.duplicated, q.late) == (50, 0, 0, 0)
    assert max(q.jitter) < 1e-9


def test_lost_duplicated_and_late_frames_are_counted() -> None:
    packets = stream(50)
    del packets[10]  # lost
    packets.append(packets[20])  # duplicated
    p = packets[30]
    packets[30] = Sent(p.arrival + 0.035, p.seq, p.timestamp)  # one frame 35 ms late
    q = quality(packets, 8000)
    assert (q.lost, q.duplicated, q.late) == (1, 1, 1)
    assert max(q.jitter) > 0.030


def test_an_early_start_anchors_the_schedule() -> None:
    """Lateness is measured from the best-placed frame: a late first frame does not
    make every later one look early."""
    packets = stream(20)
    packets[0] = Sent(packets[0].arrival + 0.030, packets[0].seq, packets[0].timestamp)
    assert quality(packets, 8000).late == 1


def test_combined_totals_and_percentiles() -> None:
    both = combined([quality(stream(10), 8000), quality(stream(5), 8000)])
    assert both["streams"] == 2 and both["frames"] == 15 and both["lost"] == 0


def test_sequence_and_timestamp_wraps_are_no_faults() -> None:
    packets = [
        Sent(1.0 + i * 0.02, (65530 + i) % 65536, (2**32 - 480 + 160 * i) % 2**32)
        for i in range(12)
    ]
    q = quality(packets, 8000)
    assert (q.lost, q.duplicated, q.late) == (0, 0, 0)
