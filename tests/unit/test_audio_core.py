"""The pure audio core: byte carry, framing, resampling, G.711, formats, RTP, pacing, metrics.

Every group below pins down one property the live audio path depends on; each assertion
is chosen so that a plausible implementation mistake (a dropped odd byte, a frame of the
wrong size, a resampler restarted per chunk, a byte-order slip, a drifting clock...)
makes it fail.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
import warnings

import numpy as np
import numpy.typing as npt
import pytest

from worker.framing import FrameAssembler, PcmBytes
from worker.g711 import ulaw_decode, ulaw_encode
from worker.media_format import MediaFormat, is_wideband, media_format_for
from worker.metrics import Registry
from worker.pacer import PacingSchedule
from worker.resample import SegmentResampler
from worker.rtp import RtpPacketizer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Samples = npt.NDArray[np.int16]


def random_splits(rng: np.random.Generator, total: int, sizes: list[int]) -> list[int]:
    """Cut points covering ``[0, total)`` with chunk sizes drawn from ``sizes``."""
    cuts = [0]
    while cuts[-1] < total:
        cuts.append(min(total, cuts[-1] + int(rng.choice(sizes))))
    return cuts


# -- PcmBytes: little-endian int16 bytes split anywhere ---------------------------------
# Proves: no byte is ever lost or duplicated whatever the split points, the carry is at
# most one byte, and the byte order is little-endian.


def _pcm_reference(n: int = 6) -> tuple[bytes, Samples]:
    samples = np.array([0, 1, -1, 32767, -32768, 0x1234, -0x1235, 255][:n], dtype=np.int16)
    return samples.astype("<i2").tobytes(), samples


def test_pcm_bytes_is_little_endian_and_signed() -> None:
    pcm = PcmBytes()
    out = pcm.feed(b"\x01\x02\x00\x80\xff\x7f\xff\xff")
    assert out.dtype == np.int16
    assert out.tolist() == [0x0201, -32768, 32767, -1]
    assert pcm.pending == 0


def test_pcm_bytes_every_pair_of_split_points_reassembles_exactly() -> None:
    data, expected = _pcm_reference(8)
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            pcm = PcmBytes()
            got: list[Samples] = []
            fed = 0
            for part in (data[:i], data[i:j], data[j:]):
                got.append(pcm.feed(part))
                fed += len(part)
                assert pcm.pending == fed % 2, (i, j)
                assert sum(g.size for g in got) == fed // 2
            np.testing.assert_array_equal(np.concatenate(got), expected, err_msg=f"{i},{j}")


def test_pcm_bytes_random_odd_splits_of_a_long_stream() -> None:
    rng = np.random.default_rng(7)
    expected = rng.integers(-32768, 32768, size=20_001, dtype=np.int16)
    data = expected.astype("<i2").tobytes()
    for _ in range(20):
        pcm = PcmBytes()
        cuts = random_splits(rng, len(data), [0, 1, 2, 3, 5, 7, 31, 1001, 4095])
        parts = [pcm.feed(data[a:b]) for a, b in itertools.pairwise(cuts)]
        assert pcm.pending == 0
        np.testing.assert_array_equal(np.concatenate(parts), expected)


def test_pcm_bytes_holds_a_trailing_odd_byte() -> None:
    pcm = PcmBytes()
    assert pcm.feed(b"\x10").size == 0
    assert pcm.pending == 1
    assert pcm.feed(b"").size == 0 and pcm.pending == 1
    assert pcm.feed(b"\x00\x20").tolist() == [0x0010]
    assert pcm.pending == 1
    assert pcm.feed(b"\x00").tolist() == [0x0020]
    assert pcm.pending == 0


# -- FrameAssembler: exact 20 ms frames -------------------------------------------------
# Proves: every frame has exactly frame_samples samples, samples come out in order with
# none dropped, only the very last partial frame is zero-padded, frames already handed
# out are not overwritten by later feeds, and an empty assembler finishes with nothing.


@pytest.mark.parametrize("frame_samples", [160, 320])
def test_frame_assembler_random_chunks_conserve_samples(frame_samples: int) -> None:
    rng = np.random.default_rng(frame_samples)
    for total in (0, 1, frame_samples - 1, frame_samples, frame_samples + 1, 12_345):
        signal = rng.integers(-32768, 32768, size=total, dtype=np.int16)
        asm = FrameAssembler(frame_samples)
        frames: list[Samples] = []
        cuts = random_splits(rng, total, [0, 1, 2, 17, 159, 160, 161, 999, 4096])
        for a, b in itertools.pairwise(cuts):
            new = asm.feed(signal[a:b])
            frames += new
            assert asm.pending_samples == b - len(frames) * frame_samples
            assert 0 <= asm.pending_samples < frame_samples
        snapshot = [f.copy() for f in frames]
        tail = asm.finish()
        assert len(tail) == (1 if total % frame_samples else 0)
        frames += tail
        assert asm.pending_samples == 0 and asm.finish() == []
        assert all(f.shape == (frame_samples,) and f.dtype == np.int16 for f in frames)
        assert len(frames) == math.ceil(total / frame_samples)
        joined = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
        np.testing.assert_array_equal(joined[:total], signal)
        assert not joined[total:].any(), "padding must be silence"
        for before, after in zip(snapshot, frames, strict=False):
            np.testing.assert_array_equal(before, after)


def test_frame_assembler_pads_only_the_last_partial_frame() -> None:
    asm = FrameAssembler(160)
    ramp = np.arange(1, 401, dtype=np.int16)  # no zero inside, so padding is visible
    frames = asm.feed(ramp)
    assert [f[0] for f in frames] == [1, 161]
    assert all(f.all() for f in frames)
    (last,) = asm.finish()
    np.testing.assert_array_equal(last[:80], ramp[320:])
    assert not last[80:].any()


def test_frame_assembler_empty_finish_yields_nothing() -> None:
    asm = FrameAssembler(160)
    assert asm.finish() == []
    assert asm.feed(np.zeros(0, dtype=np.int16)) == []
    assert asm.finish() == []
    assert len(asm.feed(np.ones(160, dtype=np.int16))) == 1
    assert asm.finish() == []


# -- SegmentResampler: one stream per segment, no clicks at chunk boundaries ------------
# Proves: feeding a segment in arbitrary chunks (1 sample, odd sizes, big blocks) gives the
# same audio as feeding it whole, with no discontinuity where chunks meet, and the right
# length once finish() drains the filter. Measured with soxr 1.1 (HQ, int16): chunked and
# whole outputs differ by at most 2 LSB (soxr rounds to int16 per output block, so it is
# not bit-identical); the tolerance is 4 LSB. A resampler restarted per chunk differs by
# thousands of LSB and shows max sample steps far above a sine's.

AMPLITUDE = 16_000


def sine(rate: int, seconds: float = 2.0, freq: float = 440.0) -> Samples:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(np.sin(2 * np.pi * freq * t) * AMPLITUDE).astype(np.int16)


def resample_whole(x: Samples, in_rate: int, out_rate: int) -> Samples:
    r = SegmentResampler(in_rate, out_rate)
    return np.concatenate([r.feed(x), r.finish()])


def resample_chunked(x: Samples, in_rate: int, out_rate: int, rng: np.random.Generator) -> Samples:
    r = SegmentResampler(in_rate, out_rate)
    cuts = random_splits(rng, x.size, [1, 1, 2, 3, 7, 33, 101, 441, 1023, 4096, 4097])
    parts = [r.feed(x[a:b]) for a, b in itertools.pairwise(cuts)]
    return np.concatenate([*parts, r.finish()])


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(22_050, 8_000), (22_050, 16_000), (24_000, 8_000)]
)
def test_resampler_chunked_equals_whole_without_clicks(in_rate: int, out_rate: int) -> None:
    x = sine(in_rate)
    whole = resample_whole(x, in_rate, out_rate)
    expected_len = x.size * out_rate / in_rate
    assert abs(whole.size - expected_len) <= 3
    # An ideal 440 Hz sine sampled at out_rate never steps by more than this.
    ideal_step = 2 * AMPLITUDE * math.sin(math.pi * 440 / out_rate)
    for seed in range(5):
        chunked = resample_chunked(x, in_rate, out_rate, np.random.default_rng(seed))
        assert abs(chunked.size - expected_len) <= 3
        n = min(chunked.size, whole.size)
        assert abs(chunked.size - whole.size) <= 1
        worst = int(np.abs(chunked[:n].astype(np.int32) - whole[:n]).max())
        assert worst <= 4, f"chunked output differs by {worst} LSB"
        max_step = int(np.abs(np.diff(chunked.astype(np.int32))).max())
        assert max_step <= ideal_step * 1.01 + 8, f"click: step {max_step} > {ideal_step:.0f}"
    # The content really is the tone: its RMS after resampling is the sine's RMS.
    mid = whole[out_rate // 10 : -out_rate // 10].astype(np.float64)
    assert math.isclose(float(np.sqrt(np.mean(mid**2))), AMPLITUDE / math.sqrt(2), rel_tol=0.01)


def level_db(x: Samples) -> float:
    """RMS level relative to a full-AMPLITUDE sine, edges (filter ramp-up) excluded."""
    y = x[x.size // 10 : -x.size // 10].astype(np.float64)
    return 20 * math.log10(max(float(np.sqrt(np.mean(y**2))), 1e-9) / (AMPLITUDE / math.sqrt(2)))


@pytest.mark.parametrize(
    ("out_rate", "passband_hz", "stopband_hz"),
    [(8_000, 3_400, 4_400), (8_000, 3_400, 9_000), (16_000, 7_000, 8_800)],
)
def test_resampler_passes_the_band_and_rejects_aliases(
    out_rate: int, passband_hz: int, stopband_hz: int
) -> None:
    # Above the new Nyquist frequency TTS has real energy (sibilants): it must be filtered
    # out, not folded back into the band. soxr HQ measures -86 dB (the int16 floor).
    rng = np.random.default_rng(11)
    keep = resample_chunked(sine(22_050, 1.0, passband_hz), 22_050, out_rate, rng)
    assert abs(level_db(keep)) < 0.5
    alias = resample_chunked(sine(22_050, 1.0, stopband_hz), 22_050, out_rate, rng)
    assert level_db(alias) < -60


def test_resampler_same_rate_is_an_exact_no_op() -> None:
    x = sine(8_000)
    r = SegmentResampler(8_000, 8_000)
    cuts = random_splits(np.random.default_rng(3), x.size, [1, 3, 160, 999])
    parts = [r.feed(x[a:b]) for a, b in itertools.pairwise(cuts)]
    tail = r.finish()
    assert tail.size == 0 and tail.dtype == np.int16
    np.testing.assert_array_equal(np.concatenate(parts), x)


def test_resampler_output_dtype_is_int16() -> None:
    r = SegmentResampler(22_050, 8_000)
    assert r.feed(sine(22_050, 0.1)).dtype == np.int16
    assert r.finish().dtype == np.int16


# -- G.711 mu-law: bit-exact with the reference ------------------------------------------
# Proves: the lookup tables agree with CPython's audioop (the Sun reference) on every one
# of the 65,536 int16 inputs and all 256 codes, including non-contiguous inputs.

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def test_ulaw_encode_matches_audioop_for_every_sample() -> None:
    expected = np.frombuffer(audioop.lin2ulaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    got = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    mismatches = np.flatnonzero(got != expected)
    assert mismatches.size == 0, f"first mismatch at sample {int(ALL_INT16[mismatches[0]])}"


def test_ulaw_decode_matches_audioop_for_every_code() -> None:
    codes = bytes(range(256))
    expected = np.frombuffer(audioop.ulaw2lin(codes, 2), dtype=np.int16)
    got = ulaw_decode(codes)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


def test_ulaw_known_values_and_strided_input() -> None:
    assert ulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xff\x7e\x80\x00"
    strided = ALL_INT16[::7]
    assert ulaw_encode(strided) == ulaw_encode(strided.copy())
    # Round trip: logarithmic quantization, within 12 LSB near zero and 6 % elsewhere.
    wide = ALL_INT16.astype(np.int32)
    err = np.abs(ulaw_decode(ulaw_encode(ALL_INT16)).astype(np.int32) - wide)
    assert bool(np.all(err <= np.maximum(12, 0.06 * np.abs(wide))))


# -- MediaFormat: codec name -> what is sent -------------------------------------------
# Proves: wideband calls get slin16 at 16 kHz when the transport can carry it, everything
# else (narrowband, unknown, or a transport limited to static payload types) mu-law at
# 8 kHz, and a 20 ms frame encodes to 160 mu-law bytes or 640 big-endian slin16 bytes.


@pytest.mark.parametrize(
    ("native", "wideband"),
    [
        ("(ulaw)", False),
        ("(alaw)", False),
        ("(g722)", True),
        ("(ulaw|g722)", True),
        ("(slin16)", True),
        ("(opus)", True),
        ("", False),
        ("(gsm)", False),
        ("(slin)", False),
        ("(G722)", True),
        ("(g729|alaw)", False),
    ],
)
def test_media_format_for(native: str, wideband: bool) -> None:
    assert is_wideband(native) is wideband
    expected = MediaFormat.SLIN16 if wideband else MediaFormat.ULAW
    assert media_format_for(native, transport_carries_slin16=True) is expected
    assert media_format_for(native, transport_carries_slin16=False) is MediaFormat.ULAW


def test_media_format_rates_and_frame_sizes() -> None:
    assert (MediaFormat.ULAW.rate, MediaFormat.ULAW.samples_per_frame) == (8000, 160)
    assert (MediaFormat.SLIN16.rate, MediaFormat.SLIN16.samples_per_frame) == (16000, 320)
    assert MediaFormat.ULAW.payload_type == 0
    assert MediaFormat.ULAW.asterisk_name == "ulaw"
    assert MediaFormat.SLIN16.asterisk_name == "slin16"


def test_media_format_encode_sizes_and_byte_order() -> None:
    ulaw_frame = np.full(160, 1000, dtype=np.int16)
    payload = MediaFormat.ULAW.encode(ulaw_frame)
    assert len(payload) == 160 and payload == ulaw_encode(ulaw_frame)
    slin_frame = np.zeros(320, dtype=np.int16)
    slin_frame[:3] = [0x1234, -2, 1]
    payload = MediaFormat.SLIN16.encode(slin_frame)
    assert len(payload) == 640
    assert payload[:6] == b"\x12\x34\xff\xfe\x00\x01"  # network (big-endian) order
    assert payload[6:] == bytes(634)


# -- RtpPacketizer: RFC 3550 header -------------------------------------------------------
# Proves: version 2, the payload type, a marker bit exactly on the first packet of each
# talkspurt, sequence +1 per packet wrapping at 65535, timestamp +samples per tick
# (silent ticks included, wrapping at 2**32) and one constant SSRC.


def rtp_header(packet: bytes) -> tuple[int, bool, int, int, int, int]:
    """(version, marker, payload type, sequence, timestamp, ssrc)."""
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    assert b0 & 0x3F == 0, "no padding, extension or CSRC"
    return b0 >> 6, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc


def test_rtp_header_fields_marker_and_clock() -> None:
    rtp = RtpPacketizer(payload_type=118, samples_per_tick=320)
    pkts = [rtp.packet(b"\x01\x02") for _ in range(3)]
    rtp.tick_silent()
    rtp.tick_silent()
    pkts += [rtp.packet(b"\x03") for _ in range(2)]
    heads = [rtp_header(p) for p in pkts]
    assert {h[0] for h in heads} == {2}
    assert {h[2] for h in heads} == {118}
    assert [h[1] for h in heads] == [True, False, False, True, False]
    seqs = [h[3] for h in heads]
    assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1, 1, 1, 1]
    ts = [h[4] for h in heads]
    deltas = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(ts)]
    assert deltas == [320, 320, 3 * 320, 320]  # two silent ticks kept the clock running
    assert {h[5] for h in heads} == {rtp.ssrc}
    assert pkts[0][12:] == b"\x01\x02" and pkts[-1][12:] == b"\x03"


def test_rtp_sequence_wraps_at_65535() -> None:
    rtp = RtpPacketizer(payload_type=0, samples_per_tick=160)
    prev = rtp_header(rtp.packet(b""))[3]
    wrapped = False
    for _ in range(65_537):
        seq = rtp_header(rtp.packet(b""))[3]
        assert seq == (prev + 1) % 65_536
        wrapped |= seq == 0 and prev == 65_535
        prev = seq
    assert wrapped


def test_rtp_timestamp_wraps_at_2_pow_32() -> None:
    rtp = RtpPacketizer(payload_type=0, samples_per_tick=160)
    rtp._timestamp = 2**32 - 200  # white-box: start near the wrap instead of ticking 27M times
    first = rtp_header(rtp.packet(b""))[4]
    rtp.tick_silent()
    third = rtp_header(rtp.packet(b""))[4]
    assert first == 2**32 - 200
    assert third == 120  # (2**32 - 200 + 320) mod 2**32


def test_rtp_streams_get_distinct_random_identities() -> None:
    ssrcs = {RtpPacketizer(0, 160).ssrc for _ in range(20)}
    assert len(ssrcs) > 15


# -- PacingSchedule: the shared clock's arithmetic ---------------------------------------
# Proves: tick n is due at exactly origin + n * period (no accumulated drift), nothing is
# due early, a late loop gets a burst of exactly the missed ticks (up to max_burst), and
# falling further behind resyncs from now instead of bursting, counting it.


def test_schedule_has_no_drift_over_10000_ticks() -> None:
    origin, period = 1000.0, 0.02
    sched = PacingSchedule(origin, period)
    rng = np.random.default_rng(0)
    ticks = 0
    for n in range(10_000):
        deadline = origin + n * period
        assert sched.next_deadline == deadline
        assert sched.due(deadline - period / 4) == 0
        ticks += sched.due(deadline + float(rng.uniform(0, period * 0.9)))
    assert ticks == 10_000
    assert sched.next_deadline == origin + 10_000 * period
    assert sched.resyncs == 0
    assert sched.max_lateness < period * 0.9


def test_schedule_due_exactly_at_deadline_and_not_before() -> None:
    sched = PacingSchedule(10.0, 0.02)
    assert sched.due(9.999) == 0
    assert sched.due(10.0) == 1
    assert sched.due(10.0) == 0
    assert sched.due(10.019) == 0
    assert sched.due(10.02) == 1


@pytest.mark.parametrize(("late_periods", "expected"), [(0.5, 1), (1.5, 2), (3.5, 4), (9.5, 10)])
def test_schedule_bursts_the_missed_ticks(late_periods: float, expected: int) -> None:
    period = 0.02
    sched = PacingSchedule(0.0, period, max_burst=10)
    assert sched.due(0.0) == 1
    now = period + late_periods * period
    assert sched.due(now) == expected
    assert sched.next_deadline == period * (1 + expected)
    assert sched.next_deadline > now
    assert sched.due(now) == 0
    assert sched.resyncs == 0
    assert sched.max_lateness == pytest.approx(late_periods * period)


def test_schedule_resyncs_when_too_far_behind() -> None:
    period = 0.02
    sched = PacingSchedule(0.0, period, max_burst=10)
    assert sched.due(0.0) == 1
    now = period + 10.5 * period  # 11 ticks missed > max_burst
    assert sched.due(now) == 1
    assert sched.resyncs == 1
    assert sched.next_deadline == pytest.approx(now + period)
    assert sched.max_lateness == pytest.approx(10.5 * period)
    # The new origin holds: later ticks are on the new grid, with no further resync.
    assert sched.due(now + period) == 1
    assert sched.due(now + 3.5 * period) == 2  # deadlines now + 2p and now + 3p
    assert sched.resyncs == 1
    assert sched.max_lateness == pytest.approx(10.5 * period)


# -- Metrics: Prometheus text exposition -------------------------------------------------
# Proves: the text parses back (HELP/TYPE before samples, label syntax, float values),
# counters accumulate per label set, gauges overwrite, histogram buckets are cumulative
# with le semantics (a value equal to a bound is in that bucket), end with +Inf equal to
# _count, and _sum is the sum of observations.

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(?:,|$)')

ParsedSample = tuple[str, tuple[tuple[str, str], ...], float]


def parse_exposition(text: str) -> tuple[dict[str, str], list[ParsedSample]]:
    """A strict little parser: returns {family: type} and the samples in order."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: list[ParsedSample] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            assert name in helps and name not in types
            types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed line {line!r}"
        name, raw_labels, value = match.groups()
        labels: list[tuple[str, str]] = []
        if raw_labels:
            consumed = 0
            for lm in _LABEL.finditer(raw_labels):
                assert lm.start() == consumed, f"bad labels {raw_labels!r}"
                labels.append((lm.group(1), lm.group(2)))
                consumed = lm.end()
            assert consumed == len(raw_labels), f"bad labels {raw_labels!r}"
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        family = family if types.get(family) == "histogram" else name
        assert family in types, f"sample {name} before its TYPE"
        samples.append((name, tuple(labels), float(value)))
    return types, samples


def test_metrics_render_counters_gauges_and_histograms() -> None:
    reg = Registry()
    reg.describe("jobs_total", "counter", "Jobs done")
    reg.describe("queue_depth", "gauge", "Queued items")
    reg.describe("latency_seconds", "histogram", "Latency", buckets=[0.5, 0.1, 1.0])
    reg.inc("jobs_total", outcome="ok")
    reg.inc("jobs_total", 2, outcome="ok")
    reg.inc("jobs_total", outcome="error")
    reg.set("queue_depth", 7)
    reg.set("queue_depth", 3)
    for v in (0.05, 0.1, 0.3, 0.5, 0.7, 2.0):
        reg.observe("latency_seconds", v, route="a")
    reg.observe("latency_seconds", 0.2, route="b")

    types, samples = parse_exposition(reg.render())
    assert types == {
        "jobs_total": "counter",
        "queue_depth": "gauge",
        "latency_seconds": "histogram",
    }
    values = {(n, labels): v for n, labels, v in samples}
    assert values[("jobs_total", (("outcome", "ok"),))] == 3
    assert values[("jobs_total", (("outcome", "error"),))] == 1
    assert values[("queue_depth", ())] == 3

    buckets = [
        (dict(lb)["le"], v)
        for n, lb, v in samples
        if n == "latency_seconds_bucket" and dict(lb)["route"] == "a"
    ]
    assert [float(le) for le, _ in buckets] == [0.1, 0.5, 1.0, math.inf]
    assert buckets[-1][0] == "+Inf"
    # le is "<=": 0.1 and 0.5 fall in their own bucket.
    assert [v for _, v in buckets] == [2, 4, 5, 6]
    assert values[("latency_seconds_count", (("route", "a"),))] == 6
    assert values[("latency_seconds_sum", (("route", "a"),))] == pytest.approx(3.65)
    b_buckets = [
        v for n, lb, v in samples if n == "latency_seconds_bucket" and dict(lb)["route"] == "b"
    ]
    assert b_buckets == [0, 1, 1, 1]


def test_metrics_empty_registry_and_unobserved_histogram_are_well_formed() -> None:
    assert Registry().render() == "\n"  # no families: an empty exposition (one newline)
    reg = Registry()
    reg.describe("h_seconds", "histogram", "Nothing yet", buckets=[1.0])
    types, samples = parse_exposition(reg.render())
    assert types == {"h_seconds": "histogram"} and samples == []


def test_metrics_large_counter_keeps_full_precision() -> None:
    reg = Registry()
    reg.describe("events_total", "counter", "Events")
    reg.inc("events_total", 1_234_567)
    _, samples = parse_exposition(reg.render())
    assert samples == [("events_total", (), 1_234_567.0)]
