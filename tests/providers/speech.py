"""Real speech for the fake providers: the product's offline espeak engine, resampled.

The fakes answer with audio a test can compare byte for byte: ``speech_pcm(text, rate)``
is exactly what a fake sends for ``text`` at ``rate`` (before any fault cuts it short).
"""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import soxr

from worker.engines.espeak import EspeakEngine
from worker.g711 import ulaw_encode

_CACHE_SIZE = 64
_cache: dict[tuple[str, int], bytes] = {}
_engine: EspeakEngine | None = None


async def speech_pcm(text: str, rate: int) -> bytes:
    """The whole utterance of ``text``: little-endian int16 mono PCM at ``rate`` Hz."""
    key = (text, rate)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    global _engine
    if _engine is None:
        _engine = EspeakEngine()
    voice = _engine.resolve_voice("en-US", "")  # empty voice_id: by language
    native = _engine.sample_rate(voice)
    raw = b"".join([chunk async for chunk in _engine.synthesize(text, voice)])
    # The engine may split at odd byte counts; the whole utterance is whole samples.
    samples = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2")
    if rate != native and len(samples):
        samples = soxr.resample(samples, native, rate)
    pcm = samples.astype("<i2").tobytes()
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))  # oldest first: dicts keep insertion order
    _cache[key] = pcm
    return pcm


def ulaw(pcm: bytes) -> bytes:
    """G.711 mu-law of int16 LE PCM (one byte per sample)."""
    return ulaw_encode(np.frombuffer(pcm, dtype="<i2"))


def _chunk(tag: bytes, body: bytes) -> bytes:
    pad = b"\0" if len(body) % 2 else b""
    return tag + struct.pack("<I", len(body)) + body + pad


# An INFO list like encoders write (ISFT = software). Placed BEFORE ``data`` so that a
# client cutting a fixed 44-byte header gets chunk bytes as audio instead of parsing.
_LIST = _chunk(b"LIST", b"INFO" + _chunk(b"ISFT", b"speaking fake provider\0"))


def wav(pcm: bytes, rate: int) -> bytes:
    """A RIFF/WAVE LINEAR16 file of ``pcm`` with a ``LIST`` chunk before ``data``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    plain = out.getvalue()
    data_at = plain.index(b"data", 12)  # after RIFF/WAVE and the fmt chunk
    body = plain[12:data_at] + _LIST + plain[data_at:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def ulaw_wav(data: bytes, rate: int) -> bytes:
    """A RIFF/WAVE mu-law file (format tag 7). ``wave`` writes only PCM, so by hand:
    non-PCM formats carry an 18-byte fmt (cbSize) and a ``fact`` chunk."""
    fmt = struct.pack("<HHIIHHH", 7, 1, rate, rate, 1, 8, 0)
    body = (
        _chunk(b"fmt ", fmt)
        + _chunk(b"fact", struct.pack("<I", len(data)))
        + _LIST
        + _chunk(b"data", data)
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def wav_chunks(blob: bytes) -> dict[bytes, bytes]:
    """The chunks of a RIFF/WAVE file by tag: how a client should read one."""
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    chunks: dict[bytes, bytes] = {}
    at = 12
    while at + 8 <= len(blob):
        tag = blob[at : at + 4]
        (size,) = struct.unpack("<I", blob[at + 4 : at + 8])
        chunks[tag] = blob[at + 8 : at + 8 + size]
        at += 8 + size + size % 2
    return chunks
