"""The harness's measurement of speech level (pure: no Asterisk), checked on a
speech-like signal whose true gain is known."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from .analysis import speech_gain
from .capture import RtpPacket

FRAME = 160  # 20 ms at 8 kHz


def voiced(seconds: float = 2.0) -> npt.NDArray[np.float64]:
    """Telephone-band noise (300-3400 Hz, seeded: never periodic, as speech is not)
    under a syllable-like envelope."""
    n = int(8000 * seconds)
    spectrum = np.fft.rfft(np.random.default_rng(7).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 8000)
    spectrum[(f < 300) | (f > 3400)] = 0
    band = np.fft.irfft(spectrum, n)
    t = np.arange(n) / 8000
    return np.asarray(band / band.std() * np.sin(np.pi * t * 2) ** 2 * 4000, dtype=np.float64)


def packets(pcm: npt.NDArray[np.float64]) -> list[RtpPacket]:
    samples = np.clip(pcm, -32768, 32767).astype(np.int16)
    return [
        RtpPacket(n * 0.02, 0, 0, 0, n, n * FRAME, 1, False, b"", samples[i : i + FRAME])
        for n, i in enumerate(range(0, samples.size - FRAME + 1, FRAME))
    ]


def test_the_same_speech_reads_1_and_half_the_amplitude_reads_half() -> None:
    x = voiced()
    delayed = np.concatenate([np.zeros(3 * FRAME + 17), x])  # the envelope aligns it
    assert abs(speech_gain(packets(x), packets(delayed)) - 1.0) < 0.02
    assert abs(speech_gain(packets(x), packets(delayed / 2)) - 0.5) < 0.02


def test_a_half_sample_delay_from_mixing_at_16_khz_is_not_read_as_a_loss() -> None:
    """ConfBridge mixing 8 kHz parties at 16 kHz can delay by one 16 kHz sample; at a
    whole-sample alignment the least-squares gain of such speech read 0.71 (seen once
    in a full run)."""
    x = voiced()
    wide = np.roll(soxr.resample(x, 8000, 16000), 1)
    back = np.asarray(soxr.resample(wide, 16000, 8000), dtype=np.float64)
    assert abs(speech_gain(packets(x), packets(back)) - 1.0) < 0.03


def test_a_frame_dropped_or_repeated_halfway_is_not_read_as_a_loss() -> None:
    """A busy host's mixer can drop or insert a frame mid-sentence; aligned once for
    the whole sentence, the half after the slip read 0.5 (seen in parallel runs)."""
    x = voiced(4.0)
    half = x.size // 2
    inserted = np.concatenate([x[:half], np.zeros(FRAME), x[half:]])
    dropped = np.concatenate([x[:half], x[half + FRAME :]])
    for slipped in (inserted, dropped):
        assert abs(speech_gain(packets(x), packets(slipped)) - 1.0) < 0.02
        assert abs(speech_gain(packets(x), packets(slipped / 2)) - 0.5) < 0.02
