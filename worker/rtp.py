"""RTP packetization (RFC 3550), just what a sender of one audio stream needs."""

from __future__ import annotations

import secrets
import struct

_HEADER = struct.Struct("!BBHII")
_VERSION_2 = 0x80


class RtpPacketizer:
    """Build RTP packets for one stream: one SSRC, a sequence number and a media clock.

    The timestamp follows the pacing clock, not the packets sent: ticks where the
    stream had nothing to send still advance it, so the receiver sees the gap as
    time that passed (and the marker bit flags the start of each talkspurt).
    """

    def __init__(self, payload_type: int, samples_per_tick: int) -> None:
        self.payload_type = payload_type
        self.samples_per_tick = samples_per_tick
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._talking = False

    def packet(self, payload: bytes) -> bytes:
        """The packet for this tick's payload; call ``tick_silent`` for ticks with none."""
        marker = 0x80 if not self._talking else 0
        self._talking = True
        header = _HEADER.pack(
            _VERSION_2, marker | self.payload_type, self._seq, self._timestamp, self.ssrc
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + self.samples_per_tick) & 0xFFFFFFFF
        return header + payload

    def tick_silent(self) -> None:
        """A tick passed with nothing sent: keep the media clock running."""
        self._talking = False
        self._timestamp = (self._timestamp + self.samples_per_tick) & 0xFFFFFFFF
