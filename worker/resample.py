"""Per-segment resampling from a TTS engine's rate to the call's rate.

One ``soxr.ResampleStream`` lives for a whole segment, so the filter state
carries across chunk boundaries and there is no click where a provider's
chunks meet. A new segment (or a flush) starts a new stream.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr


class SegmentResampler:
    """Resample one segment's int16 mono audio from ``in_rate`` to ``out_rate``."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        )

    def feed(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if self._stream is None:
            return samples
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(samples, last=False)
        return out

    def finish(self) -> npt.NDArray[np.int16]:
        """Drain the filter's delay line at the end of the segment."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(
            np.zeros(0, dtype=np.int16), last=True
        )
        return out
