"""Synthesized audio kept for reuse: the same (provider, voice, language, rate, text) is
played from here instead of being paid for and waited for again.

In memory: least recently used first out, bounded in bytes, each entry with a TTL. When
configured, also in Redis (``speaking:tts:<sha256 of the key>``, same TTL), so the
workers of a deployment share it; Redis is only a second level and its failures only
make a miss. Only whole pieces are stored: audio of a flushed or failed stream never is.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from redis.asyncio import Redis

from worker.metrics import Registry
from worker.redis_retry import REDIS_OUTAGE

log = logging.getLogger(__name__)

#: One piece larger than this (about 2 minutes at 16 kHz) is not cached.
MAX_ENTRY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class CacheKey:
    provider: str
    voice_id: str
    language: str
    rate: int
    text: str

    def digest(self) -> str:
        raw = "\0".join((self.provider, self.voice_id, self.language, str(self.rate), self.text))
        return hashlib.sha256(raw.encode()).hexdigest()


class SynthesisCache:
    """Bounded audio cache; ``get`` and ``put`` never raise."""

    def __init__(
        self,
        metrics: Registry,
        max_bytes: int = 64 * 1024 * 1024,
        ttl_s: float = 24 * 3600,
        redis: Redis | None = None,
        prefix: str = "speaking",
    ) -> None:
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._redis = redis
        self._prefix = prefix
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        metrics.describe(
            "speaking_tts_cache_total", "counter", "Synthesis cache lookups, by result"
        )

    async def get(self, key: CacheKey) -> bytes | None:
        digest = key.digest()
        entry = self._entries.get(digest)
        now = time.monotonic()
        if entry is not None and entry[1] > now:
            self._entries.move_to_end(digest)
            self._count("hit", key.provider)
            return entry[0]
        if entry is not None:
            self._drop(digest)
        if self._redis is not None:
            try:
                stored = await self._redis.get(self._redis_key(digest))
            except REDIS_OUTAGE:
                stored = None
            if isinstance(stored, bytes):
                self._keep(digest, stored, now)
                self._count("hit", key.provider)
                return stored
        self._count("miss", key.provider)
        return None

    async def put(self, key: CacheKey, pcm: bytes) -> None:
        if not pcm or len(pcm) > MAX_ENTRY_BYTES:
            return
        digest = key.digest()
        self._keep(digest, pcm, time.monotonic())
        if self._redis is not None:
            try:
                await self._redis.set(self._redis_key(digest), pcm, ex=int(self._ttl_s))
            except REDIS_OUTAGE:
                log.debug("tts cache not written to redis")

    def _keep(self, digest: str, pcm: bytes, now: float) -> None:
        if digest in self._entries:
            self._drop(digest)
        self._entries[digest] = (pcm, now + self._ttl_s)
        self._bytes += len(pcm)
        while self._bytes > self._max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, digest: str) -> None:
        pcm, _ = self._entries.pop(digest)
        self._bytes -= len(pcm)

    def _redis_key(self, digest: str) -> str:
        return f"{self._prefix}:tts:{digest}"

    def _count(self, result: str, provider: str) -> None:
        self._metrics.inc("speaking_tts_cache_total", result=result, provider=provider)

    @property
    def size_bytes(self) -> int:
        return self._bytes
