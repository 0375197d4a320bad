"""Cut a stream of samples into exact fixed-size frames.

Providers and resamplers deliver audio in arbitrary chunk sizes (and PCM byte
streams split at odd byte counts); telephony wants exactly 20 ms per packet.
Nothing is dropped: partial frames and odd bytes are carried over to the next
call, and only the very end of a segment is padded with silence.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class PcmBytes:
    """Turn little-endian int16 PCM bytes, split anywhere, into sample arrays."""

    def __init__(self) -> None:
        self._odd = b""

    def feed(self, data: bytes) -> npt.NDArray[np.int16]:
        data = self._odd + data
        usable = len(data) & ~1
        self._odd = data[usable:]
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)

    @property
    def pending(self) -> int:
        """Bytes held back (0 or 1)."""
        return len(self._odd)


class FrameAssembler:
    """Accumulate samples and hand out frames of exactly ``frame_samples`` samples."""

    def __init__(self, frame_samples: int) -> None:
        self.frame_samples = frame_samples
        self._buffer = np.zeros(0, dtype=np.int16)

    def feed(self, samples: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
        if samples.size:
            self._buffer = np.concatenate((self._buffer, samples))
        n = self._buffer.size // self.frame_samples
        if n == 0:
            return []
        whole = self._buffer[: n * self.frame_samples]
        self._buffer = self._buffer[n * self.frame_samples :]
        return list(whole.reshape(n, self.frame_samples))

    def finish(self) -> list[npt.NDArray[np.int16]]:
        """Emit the last partial frame, padded with silence; the assembler is empty after."""
        if not self._buffer.size:
            return []
        frame = np.zeros(self.frame_samples, dtype=np.int16)
        frame[: self._buffer.size] = self._buffer
        self._buffer = np.zeros(0, dtype=np.int16)
        return [frame]

    @property
    def pending_samples(self) -> int:
        return int(self._buffer.size)
