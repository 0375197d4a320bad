"""Each customer's sessions, newest first, for listing and paging.

A sorted set per customer (``speaking:customer:{id}:sessions``), scored by creation
time in microseconds. Entries go with their sessions: a listing drops ids whose record
expired, each add drops entries older than any session can live, and the set itself
expires a day after the last session record it could list. A page token is the score of
the last item returned: the next page continues strictly below it, so sessions created
meanwhile never shift a page.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from worker.model import Speaking
from worker.store import STOPPED_SESSION_TTL_S, Keys

#: No session outlives this: a month of calls, then its week of retention.
RETENTION_S = 30 * 24 * 3600 + STOPPED_SESSION_TTL_S


def _score(tm_create: str) -> int:
    stamp = datetime.strptime(tm_create, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1_000_000)


def encode_token(score: int) -> str:
    return base64.urlsafe_b64encode(str(score).encode()).decode().rstrip("=")


def decode_token(token: str) -> int | None:
    try:
        return int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        return None


class Catalog:
    """The per-customer index of sessions."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def _key(self, customer_id: str) -> str:
        return f"{self._keys.prefix}:customer:{customer_id}:sessions"

    async def add(self, speaking: Speaking) -> None:
        key = self._key(speaking.customer_id)
        score = _score(speaking.tm_create)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {speaking.id: score})
            # Entries older than any session can live are dropped, and an idle customer's
            # catalog expires with the last of its sessions' records.
            pipe.zremrangebyscore(key, "-inf", score - RETENTION_S * 1_000_000)
            pipe.expire(key, STOPPED_SESSION_TTL_S + 24 * 3600)
            await pipe.execute()

    async def remove(self, customer_id: str, speaking_id: str) -> None:
        await self._redis.zrem(self._key(customer_id), speaking_id)

    async def page(self, customer_id: str, below: int | None, count: int) -> list[tuple[str, int]]:
        """Up to ``count`` (id, score) pairs, newest first, strictly older than ``below``."""
        top = f"({below}" if below is not None else "+inf"
        rows: Any = await self._redis.zrevrangebyscore(
            self._key(customer_id), top, "-inf", start=0, num=count, withscores=True
        )
        return [(m.decode() if isinstance(m, bytes) else str(m), int(s)) for m, s in rows]
