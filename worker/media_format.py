"""The audio format the worker sends to Asterisk, chosen from the call's codec.

Rule: if the call's native codec samples at 16 kHz or more (G.722, Opus, slin16,
SILK/Siren/Speex wideband...) and the media transport can carry 16 kHz, send
signed-linear 16 kHz (``slin16``) so no bandwidth is lost; otherwise send G.711
mu-law at 8 kHz, which every call can take.

Why the transport matters (measured on Asterisk 22.10, see docs/media.md): an
external-media channel over RTP (``UnicastRTP``) gets no receive payload mapping,
so Asterisk only decodes static payload types (0-34). slin16's type is dynamic
(118): Asterisk *sends* it but silently drops it on receive. Wideband calls are
therefore served over chan_websocket (Asterisk >= 20.16/21.11/22.6), which carries
slin16 as is; where that is unavailable the worker sends mu-law over RTP, which
Asterisk upsamples into the wideband call.
"""

from __future__ import annotations

import enum
import re

import numpy as np
import numpy.typing as npt

from worker.g711 import ulaw_encode

#: Audio is framed in exact 20 ms packets, the telephony default ptime.
FRAME_MS = 20


class MediaFormat(enum.Enum):
    """An RTP format: Asterisk name, sample rate, RTP payload type."""

    ULAW = ("ulaw", 8000, 0)
    SLIN16 = ("slin16", 16000, 118)

    def __init__(self, asterisk_name: str, rate: int, payload_type: int) -> None:
        self.asterisk_name = asterisk_name
        self.rate = rate
        self.payload_type = payload_type

    @property
    def samples_per_frame(self) -> int:
        return self.rate * FRAME_MS // 1000

    def encode(self, frame: npt.NDArray[np.int16]) -> bytes:
        """Encode one frame of int16 samples as the RTP payload of this format
        (L16 on RTP is big-endian, RFC 3551)."""
        if self is MediaFormat.ULAW:
            return ulaw_encode(frame)
        return frame.astype(">i2").tobytes()

    def encode_raw(self, frame: npt.NDArray[np.int16]) -> bytes:
        """Encode one frame as Asterisk's own format: signed linear is little-endian
        (host order) on chan_websocket, unlike on RTP."""
        if self is MediaFormat.ULAW:
            return ulaw_encode(frame)
        return frame.astype("<i2").tobytes()


_WIDEBAND = re.compile(
    r"^(g722|g719|opus|silk(1[26]|24)|siren(7|14)|speex(16|32)|slin(1[26]|2[4]|32|44|48|96|192)|"
    r"g726aal2_?16|celt|testlaw16)$"
)


def is_wideband(native_formats: str) -> bool:
    """Whether ``CHANNEL(audionativeformat)`` (e.g. ``(ulaw|g722)``) has a >= 16 kHz codec."""
    names = [n.strip().lower() for n in native_formats.strip("() ").split("|") if n.strip()]
    return any(_WIDEBAND.match(n) for n in names)


def media_format_for(native_formats: str, transport_carries_slin16: bool) -> MediaFormat:
    """Pick the format for a call from its native formats and what the transport can carry."""
    if transport_carries_slin16 and is_wideband(native_formats):
        return MediaFormat.SLIN16
    return MediaFormat.ULAW
