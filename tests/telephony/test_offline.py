"""Offline checks of the harness's own pieces (no Asterisk): the pcap SIPp replays,
our pcap parser (Ethernet and Linux cooked captures), levels and WAV rendering."""

from __future__ import annotations

import dataclasses
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from .analysis import SPEECH_THRESHOLD_DBFS, level_dbfs, render, speech_frames, write_wav
from .capture import PcapReader, RtpPacket, read_pcap
from .media import CODECS, CodecName, decode_payload
from .rtp_pcap import QUIET_DBFS, quiet_signal, write_rtp_pcap


@pytest.mark.parametrize("codec", ["ulaw", "slin16"])
def test_written_pcap_is_quiet_20ms_rtp(codec: CodecName, tmp_path: Path) -> None:
    spec = CODECS[codec]
    packets = read_pcap(write_rtp_pcap(tmp_path / "a.pcap", codec, 2.0))
    assert len(packets) == 100
    assert [p.seq for p in packets] == list(range(100))
    assert [p.timestamp for p in packets] == [i * spec.samples_per_frame for i in range(100)]
    assert {p.payload_type for p in packets} == {spec.payload_type}
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert packets[1].arrival - packets[0].arrival == pytest.approx(0.02)
    levels = [level_dbfs(p.samples) for p in packets]
    assert max(levels) < QUIET_DBFS + 3 and min(levels) > QUIET_DBFS - 3
    assert speech_frames(packets) == []


def test_linux_cooked_capture_is_parsed(tmp_path: Path) -> None:
    """Re-wrap an Ethernet capture as DLT_LINUX_SLL2 (what tcpdump -i any writes)."""
    data = write_rtp_pcap(tmp_path / "eth.pcap", "ulaw", 0.1).read_bytes()
    out, pos = bytearray(data[:20] + struct.pack("<I", 276)), 24
    while pos < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        ip = data[pos + 16 + 14 : pos + 16 + caplen]
        sll2 = b"\x08\x00" + bytes(18)
        out += struct.pack("<IIII", sec, usec, len(sll2) + len(ip), len(sll2) + len(ip))
        out += sll2 + ip
        pos += 16 + caplen
    cooked = tmp_path / "sll2.pcap"
    cooked.write_bytes(bytes(out))
    assert [p.payload for p in read_pcap(cooked)] == [
        p.payload for p in read_pcap(tmp_path / "eth.pcap")
    ]


def test_reader_waits_for_half_written_records(tmp_path: Path) -> None:
    data = write_rtp_pcap(tmp_path / "full.pcap", "ulaw", 0.2).read_bytes()
    growing = tmp_path / "growing.pcap"
    growing.write_bytes(data[:500])
    reader = PcapReader(growing)
    first = len(reader.read_new())
    growing.write_bytes(data)
    assert first + len(reader.read_new()) == 10


def test_levels_and_threshold() -> None:
    sine = (32767 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.int16)
    assert level_dbfs(sine) == pytest.approx(-3.01, abs=0.05)
    assert level_dbfs(np.zeros(160, dtype=np.int16)) == -120.0
    speech_like = quiet_signal(160, 8000, level_dbfs=-30.0)
    assert level_dbfs(speech_like) > SPEECH_THRESHOLD_DBFS


def test_render_places_by_timestamp_and_leaves_gaps_silent(tmp_path: Path) -> None:
    packets = read_pcap(write_rtp_pcap(tmp_path / "a.pcap", "slin16", 1.0, level_dbfs=-20))
    kept = packets[:10] + packets[20:]  # 200 ms lost
    jittered = [
        dataclasses.replace(p, arrival=p.arrival + (0.004 if i % 2 else 0.0))
        for i, p in enumerate(kept)
    ]
    audio = render(jittered)
    assert len(audio) == 16000
    assert not audio[3200:6400].any()
    assert np.array_equal(audio[6400:6720], kept[10].samples)
    path = write_wav(tmp_path / "a.wav", jittered)
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (16000, 16000)


def test_unknown_payload_type_counts_as_silence() -> None:
    packet = RtpPacket(0.0, 1, 2, 13, 0, 0, 0, False, b"\x40", decode_payload(13, b"\x40"))
    assert speech_frames([packet]) == []
