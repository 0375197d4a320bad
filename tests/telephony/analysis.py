"""Per-frame audio analysis of captured RTP: was this 20 ms frame speech or not?

Levels are RMS in dBFS relative to 32768 (a full-scale sine reads -3 dBFS).
The parties send -55 dBFS noise (rtp_pcap.QUIET_DBFS) and Asterisk's prompts and
TTS speech have active frames around -30..-15 dBFS, so the default threshold of
-35 dBFS sits 20 dB above the background (no false positives even after mu-law
quantisation) and low enough that all but the softest syllable tails of speech
count. Gaps between words fall below it, so count frames, do not expect runs.
"""

from __future__ import annotations

import itertools
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from .capture import RtpPacket

SPEECH_THRESHOLD_DBFS = -35.0
SILENCE_DBFS = -120.0  # level reported for an empty or all-zero frame


def level_dbfs(samples: npt.NDArray[np.int16]) -> float:
    """RMS level of samples in dBFS (re 32768); SILENCE_DBFS for nothing/zeros."""
    if samples.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * float(np.log10(rms / 32768.0)))


def packet_levels(packets: Sequence[RtpPacket]) -> list[float]:
    """Level of each packet, in order."""
    return [level_dbfs(p.samples) for p in packets]


def speech_frames(
    packets: Sequence[RtpPacket], threshold_dbfs: float = SPEECH_THRESHOLD_DBFS
) -> list[RtpPacket]:
    """The packets louder than threshold_dbfs: the frames that carried speech."""
    return [p for p in packets if level_dbfs(p.samples) > threshold_dbfs]


def first_loud_time(
    packets: Sequence[RtpPacket],
    threshold_dbfs: float = SPEECH_THRESHOLD_DBFS,
    after: float | None = None,
) -> float | None:
    """Arrival time of the first loud packet (at or after `after`), None if none."""
    for p in packets:
        if (after is None or p.arrival >= after) and level_dbfs(p.samples) > threshold_dbfs:
            return p.arrival
    return None


def in_window(
    packets: Sequence[RtpPacket], start: float | None = None, end: float | None = None
) -> list[RtpPacket]:
    """Packets that arrived in [start, end) (open ends when None)."""
    return [
        p
        for p in packets
        if (start is None or p.arrival >= start) and (end is None or p.arrival < end)
    ]


def count_loud(
    packets: Sequence[RtpPacket],
    start: float | None = None,
    end: float | None = None,
    threshold_dbfs: float = SPEECH_THRESHOLD_DBFS,
) -> int:
    """How many packets that arrived in [start, end) were loud."""
    return len(speech_frames(in_window(packets, start, end), threshold_dbfs))


def tone_dbfs(samples: npt.NDArray[np.int16], hz: float, rate: int = 8000) -> float:
    """Level (dBFS, as a sine's RMS) of the component at ``hz`` in one frame: a
    single-bin DFT, Hann-windowed, so broadband noise and speech elsewhere barely count."""
    if samples.size == 0:
        return SILENCE_DBFS
    n = np.arange(samples.size)
    window = np.hanning(samples.size)
    bin_ = np.sum(samples * window * np.exp(-2j * np.pi * hz * n / rate))
    amplitude = 2.0 * abs(bin_) / window.sum()
    rms = amplitude / np.sqrt(2.0)
    return max(SILENCE_DBFS, 20.0 * float(np.log10(rms / 32768.0))) if rms > 0 else SILENCE_DBFS


def packet_rate(packets: Sequence[RtpPacket]) -> float:
    """Packets per second between the first and last arrival (about 50 for 20 ms RTP)."""
    if len(packets) < 2:
        return 0.0
    span = packets[-1].arrival - packets[0].arrival
    return (len(packets) - 1) / span if span > 0 else 0.0


def max_gap(packets: Sequence[RtpPacket]) -> float:
    """Longest time between consecutive arrivals, in seconds (0 for < 2 packets)."""
    times = [p.arrival for p in packets]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def render(packets: Sequence[RtpPacket], sample_rate: int | None = None) -> npt.NDArray[np.int16]:
    """The received audio as one signal, gaps as silence.

    Within one RTP stream (same SSRC, timestamps consistent with arrival times)
    packets are placed by RTP timestamp, which is jitter-free; when the stream
    changes or jumps (new SSRC, Asterisk switching sources) placement re-anchors
    on arrival time, so a restart neither overlaps nor drifts.
    """
    ordered = sorted(packets, key=lambda p: p.arrival)
    if not ordered:
        return np.zeros(0, dtype=np.int16)
    rate = sample_rate or ordered[0].sample_rate
    t0 = ordered[0].arrival
    placed: list[tuple[int, npt.NDArray[np.int16]]] = []
    anchor: tuple[int, int, int] | None = None  # ssrc, rtp timestamp, sample position
    for p in ordered:
        pos = round((p.arrival - t0) * rate)  # by arrival, unless the stream continues
        if anchor is not None and anchor[0] == p.ssrc:
            ticks = (p.timestamp - anchor[1]) & 0xFFFFFFFF
            by_ts = anchor[2] + ticks * rate // p.sample_rate
            if abs(by_ts - pos) <= rate // 5:  # within 200 ms: same stream
                pos = by_ts
            else:
                anchor = None
        if anchor is None or anchor[0] != p.ssrc:
            anchor = (p.ssrc, p.timestamp, pos)
        samples = p.samples
        if p.sample_rate != rate and samples.size:  # mixed rates: nearest-sample resample
            idx = np.arange(samples.size * rate // p.sample_rate) * p.sample_rate // rate
            samples = samples[idx]
        placed.append((max(pos, 0), samples))
    out = np.zeros(max(pos + s.size for pos, s in placed), dtype=np.int16)
    for pos, s in placed:
        out[pos : pos + s.size] = s
    return out


def write_wav(path: Path, packets: Sequence[RtpPacket], sample_rate: int | None = None) -> Path:
    """Write what one party received to a mono 16-bit WAV (see render())."""
    audio = render(packets, sample_rate)
    rate = sample_rate or (packets[0].sample_rate if packets else 8000)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(audio.astype("<i2").tobytes())
    return path


def _pcm(packets: Sequence[RtpPacket]) -> npt.NDArray[np.float64]:
    if not packets:
        return np.zeros(0)
    return np.concatenate([p.samples for p in packets]).astype(np.float64)


def speech_gain(reference: Sequence[RtpPacket], received: Sequence[RtpPacket]) -> float:
    """Gain of the speech in ``received`` relative to the same speech in ``reference``
    (e.g. what a call party heard of the same sentence): the two are aligned (per-frame
    envelope), then each half second of the reference's speech is aligned again on its
    own, to a quarter sample, and its least-squares gain taken; the median of those is
    returned. 1.0 means the same level; 0.5 is -6 dB. Both at one rate.

    Aligned once for the whole sentence, a single frame that a mixer dropped or repeated
    (a busy host) halfway through reads 0.5: the half after the slip no longer lines up.
    The quarter sample: a mixer that resamples (ConfBridge mixing at 16 kHz for 8 kHz
    parties) can delay by half a sample, and a least-squares gain at a half-sample
    offset reads 0.7-0.9 for speech at the same level."""
    x, y = _pcm(reference), _pcm(received)
    frame = reference[0].samples.size if reference else 160
    if x.size < 10 * frame or y.size < 10 * frame:
        return 0.0
    ex, ey = _envelope(x, frame), _envelope(y, frame)
    lag = int(np.argmax(np.correlate(ex - ex.mean(), ey - ey.mean(), "full"))) - (ey.size - 1)
    x, y = (x[lag * frame :], y) if lag >= 0 else (x, y[-lag * frame :])
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    loud = np.zeros(n, dtype=bool)
    mask = np.repeat(_envelope(x, frame) > 10 ** (SPEECH_THRESHOLD_DBFS / 20) * 32768, frame)
    loud[: mask.size] = mask
    window, reach, up = 25 * frame, 2 * frame, 4  # half a second; a slip of up to 2 frames
    gains = []
    for begin in range(reach + 2, n - window - reach - 2, window):
        part = slice(begin, begin + window)
        if loud[part].sum() < window // 4:
            continue  # mostly a pause: no level to read
        shift = max(
            range(-reach, reach + 1),
            key=lambda s: float(np.dot(x[part], y[begin + s : begin + s + window])),
        )
        gains.append(_fine_gain(x[part], y[begin + shift - 2 : begin + shift + window + 2], up))
    return float(np.median(gains)) if gains else 0.0


def _envelope(s: npt.NDArray[np.float64], frame: int) -> npt.NDArray[np.float64]:
    rms: npt.NDArray[np.float64] = np.sqrt(
        (s[: s.size // frame * frame].reshape(-1, frame) ** 2).mean(axis=1)
    )
    return rms


def _fine_gain(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], up: int) -> float:
    """Least-squares gain of ``y`` (``x`` with 2 samples more each side) over ``x``, at
    the best of the quarter-sample offsets within a sample."""
    fx, fy = (np.asarray(soxr.resample(s, 8000, 8000 * up), dtype=np.float64) for s in (x, y))
    n = fx.size
    best = max(range(0, 4 * up + 1), key=lambda s: float(np.dot(fx, fy[s : s + n])))
    return float(np.dot(fx, fy[best : best + n]) / max(float(np.dot(fx, fx)), 1.0))
