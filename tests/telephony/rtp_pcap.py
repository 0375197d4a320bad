"""Write pcap files of quiet RTP for SIPp's play_pcap_audio.

SIPp replays the UDP payload of each packet (RTP header included) with the
capture's timing, rewriting only the UDP ports. So the file must hold exactly the
RTP we want on the wire: 20 ms frames, the negotiated payload type, and audio far
below speech level (-55 dBFS by default) so that any frame a test finds loud was
injected by the product, not sent by a party.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .media import CODECS, Codec, CodecName

DLT_EN10MB = 1
PCAP_MAGIC = 0xA1B2C3D4
QUIET_DBFS = -55.0
_PORT = 6000  # arbitrary: SIPp replaces it with the negotiated ports


def quiet_signal(
    n_samples: int,
    sample_rate: int,
    level_dbfs: float = QUIET_DBFS,
    tone_hz: float | None = None,
    seed: int = 1,
) -> npt.NDArray[np.int16]:
    """Gaussian noise (or a sine if tone_hz) whose RMS is level_dbfs re 32768."""
    rms = 32768.0 * 10.0 ** (level_dbfs / 20.0)
    if tone_hz is None:
        signal = np.random.default_rng(seed).normal(0.0, rms, n_samples)
    else:
        t = np.arange(n_samples) / sample_rate
        signal = rms * np.sqrt(2.0) * np.sin(2.0 * np.pi * tone_hz * t)
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(rtp: bytes, ip_id: int) -> bytes:
    """Ethernet + IPv4 + UDP around one RTP packet, loopback addresses."""
    udp_len = 8 + len(rtp)
    loopback = bytes([127, 0, 0, 1])
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + udp_len,
        ip_id & 0xFFFF,
        0x4000,
        64,
        17,
        0,
        loopback,
        loopback,
    )
    ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", _PORT, _PORT, udp_len, 0)
    return b"\x00" * 12 + b"\x08\x00" + ip + udp + rtp


def rtp_packets(
    codec: Codec, samples: npt.NDArray[np.int16], ssrc: int = 0x5EA4_1001
) -> list[bytes]:
    """Cut samples into 20 ms RTP packets (marker on the first, as at a talkspurt start)."""
    step = codec.samples_per_frame
    packets = []
    for i in range(len(samples) // step):
        header = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if i == 0 else 0) | codec.payload_type,
            i & 0xFFFF,
            (i * step) & 0xFFFFFFFF,
            ssrc,
        )
        packets.append(header + codec.encode(samples[i * step : (i + 1) * step]))
    return packets


def write_rtp_pcap(
    path: Path,
    codec: CodecName,
    seconds: float,
    level_dbfs: float = QUIET_DBFS,
    tone_hz: float | None = None,
    seed: int = 1,
    marker_tone: tuple[float, float] | None = None,
) -> Path:
    """Write `seconds` of quiet 20 ms RTP in `codec` to a pcap SIPp can replay; returns path.
    ``marker_tone`` (hz, dBFS): a steady tone added to the noise, so that whoever hears
    this party can be told by frequency (conference tests)."""
    spec = CODECS[codec]
    n_frames = max(1, round(seconds * 50))
    n_samples = n_frames * spec.samples_per_frame
    signal = quiet_signal(n_samples, spec.sample_rate, level_dbfs, tone_hz, seed)
    if marker_tone is not None:
        tone = quiet_signal(n_samples, spec.sample_rate, marker_tone[1], marker_tone[0])
        signal = np.clip(signal.astype(np.int32) + tone, -32768, 32767).astype(np.int16)
    chunks = [struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, 65535, DLT_EN10MB)]
    for i, rtp in enumerate(rtp_packets(spec, signal, ssrc=0x5EA41000 + seed)):
        frame = _frame(rtp, i)
        usec = i * 20_000
        chunks.append(
            struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        chunks.append(frame)
    path.write_bytes(b"".join(chunks))
    return path
