"""The two codecs the harness speaks, and how their RTP payloads map to int16 samples.

Kept in one place so the pcap writer, the SIP scenarios' SDP and the capture
decoder cannot disagree on payload types or byte order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from worker.g711 import ulaw_decode, ulaw_encode

CodecName = Literal["ulaw", "slin16"]

# Asterisk's default payload type for slin16; the harness offers the same one so the
# PT in the replayed pcap matches what both legs negotiate.
L16_PAYLOAD_TYPE = 118


@dataclass(frozen=True)
class Codec:
    """What SDP, RTP framing and decoding need to know about one codec."""

    name: CodecName
    payload_type: int
    rtpmap: str  # encoding/clock as written in SDP a=rtpmap
    sample_rate: int

    @property
    def samples_per_frame(self) -> int:
        """Samples in one 20 ms packet (also the RTP timestamp step)."""
        return self.sample_rate // 50

    def encode(self, samples: npt.NDArray[np.int16]) -> bytes:
        """int16 samples to RTP payload bytes."""
        if self.name == "ulaw":
            return ulaw_encode(samples)
        return samples.astype(">i2").tobytes()


CODECS: dict[CodecName, Codec] = {
    "ulaw": Codec("ulaw", 0, "PCMU/8000", 8000),
    "slin16": Codec("slin16", L16_PAYLOAD_TYPE, "L16/16000", 16000),
}


def codec_for_payload_type(payload_type: int) -> Codec | None:
    """The codec of a received packet: PT 0 is mu-law, any dynamic PT (96-127) is
    taken as L16/16000 because slin16 is the only dynamic codec the endpoints allow."""
    if payload_type == 0:
        return CODECS["ulaw"]
    if 96 <= payload_type <= 127:
        return CODECS["slin16"]
    return None


def decode_payload(payload_type: int, payload: bytes) -> npt.NDArray[np.int16]:
    """RTP payload to int16 samples; empty for payload types the harness does not know
    (e.g. comfort noise), so they count as silence rather than garbage."""
    codec = codec_for_payload_type(payload_type)
    if codec is None:
        return np.zeros(0, dtype=np.int16)
    if codec.name == "ulaw":
        return ulaw_decode(payload)
    usable = len(payload) - len(payload) % 2
    return np.frombuffer(payload[:usable], dtype=">i2").astype(np.int16)
