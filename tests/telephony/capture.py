"""Record the RTP each party receives, with tcpdump on loopback, and parse it ourselves.

tcpdump sees exactly what reached each SIPp's media port, which is the only honest
answer to "what did this party hear". The pcap is parsed here (no scapy/dpkt) and
can be read while tcpdump is still writing, so tests can look at audio mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .media import codec_for_payload_type, decode_payload

# Link-layer types: header length before the IP packet, and where the EtherType sits.
_LINK_HEADERS = {
    1: (14, 12),  # DLT_EN10MB: what "-i lo" gives
    113: (16, 14),  # DLT_LINUX_SLL: "-i any" on older libpcap
    276: (20, 0),  # DLT_LINUX_SLL2: "-i any" on libpcap >= 1.10
    101: (0, None),  # DLT_RAW
    228: (0, None),  # DLT_IPV4
}


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet as received: when, where, its header and decoded audio."""

    arrival: float  # capture time, seconds since the epoch
    src_port: int
    dst_port: int
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes
    samples: npt.NDArray[np.int16] = field(repr=False, compare=False)

    @property
    def sample_rate(self) -> int:
        """Clock rate of the payload (8000 for PCMU, 16000 for L16); 8000 if unknown."""
        codec = codec_for_payload_type(self.payload_type)
        return codec.sample_rate if codec else 8000


def _parse_rtp(arrival: float, ip: bytes) -> RtpPacket | None:
    """IPv4/UDP/RTP bytes to a packet, or None if it is not RTP version 2."""
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    src_port, dst_port, udp_len = struct.unpack_from("!HHH", ip, ihl)
    rtp = ip[ihl + 8 : ihl + udp_len]
    if len(rtp) < 12 or rtp[0] >> 6 != 2:
        return None
    first, second, seq, timestamp, ssrc = struct.unpack_from("!BBHII", rtp)
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10 and len(rtp) >= offset + 4:  # header extension
        offset += 4 + 4 * struct.unpack_from("!H", rtp, offset + 2)[0]
    end = len(rtp)
    if first & 0x20 and end > offset:  # padding: last byte says how much
        end -= rtp[-1]
    payload = rtp[offset:end]
    pt = second & 0x7F
    return RtpPacket(
        arrival,
        src_port,
        dst_port,
        pt,
        seq,
        timestamp,
        ssrc,
        bool(second & 0x80),
        payload,
        decode_payload(pt, payload),
    )


class PcapReader:
    """Incremental reader of a pcap that may still be growing (tcpdump -U)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._endian = "<"
        self._nano = False
        self._link: tuple[int, int | None] | None = None
        self.packets: list[RtpPacket] = []

    def read_new(self) -> list[RtpPacket]:
        """Parse records appended since the last call; a half-written last record waits."""
        try:
            with self.path.open("rb") as f:  # only what is new: tests poll mid-call
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        pos = 0
        if self._link is None:
            if len(data) < 24:
                return []
            self._read_header(data[:24])
            pos = 24
        assert self._link is not None
        link_len, type_at = self._link
        new: list[RtpPacket] = []
        while pos + 16 <= len(data):
            sec, frac, caplen, _ = struct.unpack_from(self._endian + "IIII", data, pos)
            if pos + 16 + caplen > len(data):
                break
            frame = data[pos + 16 : pos + 16 + caplen]
            pos += 16 + caplen
            if type_at is not None and frame[type_at : type_at + 2] != b"\x08\x00":
                continue  # not IPv4
            arrival = sec + frac / (1e9 if self._nano else 1e6)
            packet = _parse_rtp(arrival, frame[link_len:])
            if packet is not None:
                new.append(packet)
        self._offset += pos
        self.packets.extend(new)
        return new

    def _read_header(self, header: bytes) -> None:
        magic = header[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            self._endian = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            self._endian = ">"
        else:
            raise ValueError(f"{self.path}: not a pcap file (magic {magic.hex()})")
        self._nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        linktype = struct.unpack_from(self._endian + "I", header, 20)[0] & 0xFFFF
        if linktype not in _LINK_HEADERS:
            raise ValueError(f"{self.path}: unsupported link type {linktype}")
        self._link = _LINK_HEADERS[linktype]


def read_pcap(path: Path) -> list[RtpPacket]:
    """All RTP packets of a finished pcap file."""
    reader = PcapReader(path)
    reader.read_new()
    return reader.packets


class RtpCapture:
    """tcpdump recording the UDP packets sent to some ports on loopback.

    Start it before the call so the first packets are not missed; stop it with
    SIGINT so tcpdump flushes and closes the file properly.
    """

    def __init__(
        self, path: Path, ports: Iterable[int], interface: str = "lo", bpf: str = ""
    ) -> None:
        """``bpf``, if given, replaces the filter on ``ports`` (a tcpdump expression)."""
        self.path = path
        self.ports = sorted(set(ports))
        self.interface = interface
        self.bpf = bpf
        self._proc: asyncio.subprocess.Process | None = None
        self._reader = PcapReader(path)
        self.stderr = ""

    async def start(self, within_s: float = 10.0) -> None:
        """Start tcpdump and return once it says it is listening (the filter is set)."""
        tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
        filt = self.bpf or "udp and (" + " or ".join(f"dst port {p}" for p in self.ports) + ")"
        # --immediate-mode: hand each packet over at once (libpcap otherwise batches
        # them for up to 1 s), -U: write each to the file at once; together they let
        # tests read the audio mid-call. -Z root: Debian's tcpdump drops to user
        # "tcpdump" before opening the file, which then cannot write into a root-owned
        # test directory.
        cmd = [
            tcpdump,
            "-i",
            self.interface,
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            "0",
            "-B",  # 32 MB of kernel buffer: at 10,000+ packets/s a smaller one drops
            "32768",
            "-Z",
            "root",
            "-w",
            str(self.path),
            filt,
        ]
        setpriv = shutil.which("setpriv")
        if setpriv:  # dies with us if the test process is killed
            cmd = [setpriv, "--pdeathsig", "INT", "--", *cmd]
        self._proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(within_s):
                while True:
                    raw = await self._proc.stderr.readline()
                    if not raw:
                        await self._proc.wait()
                        raise RuntimeError("tcpdump exited: " + "".join(lines))
                    lines.append(raw.decode(errors="replace"))
                    if "listening on" in lines[-1]:
                        break
        except BaseException:
            await self.stop()
            raise
        self.stderr = "".join(lines)

    def packets(self, port: int | None = None) -> list[RtpPacket]:
        """RTP captured so far (all of it once stopped), optionally only to one port."""
        self._reader.read_new()
        if port is None:
            return list(self._reader.packets)
        return [p for p in self._reader.packets if p.dst_port == port]

    @property
    def running(self) -> bool:
        """True while tcpdump is alive."""
        return self._proc is not None and self._proc.returncode is None

    async def stop(self, within_s: float = 5.0) -> None:
        """SIGINT tcpdump (it flushes and writes its stats) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(within_s):
                rest = await proc.stderr.read() if proc.stderr else b""
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            rest = b""
        self.stderr += rest.decode(errors="replace")
        self._reader.read_new()
