"""API keys: who is calling. Keys map to a customer id; only their SHA-256 is stored.

Provisioning: ``speaking-api add-key --customer <customer id>`` prints a new key once;
``speaking-api revoke-key <key>`` removes it. Keys live in the Redis hash
``speaking:apikeys`` (sha256 hex of the key -> customer id). A request presents its key
as ``?token=``, ``?accesskey=`` (as the public document shows) or
``Authorization: Bearer``. Keys are never logged: the access log omits query strings.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from aiohttp import web
from redis.asyncio import Redis

from worker.redis_text import as_text


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.query.get("token") or request.query.get("accesskey") or None


#: How long a key's lookup is remembered in the process: a revoked key works at most this
#: long more on each API process, and a flood of requests costs no Redis call per request.
CACHE_TTL_S = 5.0
CACHE_SIZE = 10_000


class KeyStore:
    """The customer behind each API key."""

    def __init__(self, redis: Redis, prefix: str = "speaking") -> None:
        self._redis = redis
        self._key = f"{prefix}:apikeys"
        self._cache: dict[str, tuple[str | None, float]] = {}  # digest -> (customer, until)

    async def customer_for(self, key: str) -> str | None:
        digest = _digest(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        raw = await self._redis.hget(self._key, digest)
        customer = None if raw is None else as_text(raw)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[digest] = (customer, now + CACHE_TTL_S)
        return customer

    async def add(self, customer_id: str, key: str | None = None) -> str:
        """A new key for the customer (ValueError for an empty customer id)."""
        if not customer_id:
            raise ValueError("a key needs a customer id")
        key = key or secrets.token_urlsafe(32)
        await self._redis.hset(self._key, _digest(key), customer_id)
        return key

    async def revoke(self, key: str) -> bool:
        return bool(await self._redis.hdel(self._key, _digest(key)))

    async def listing(self) -> list[tuple[str, str]]:
        """(key id, customer) of every key, by id. A key id is the first KEY_ID_CHARS
        hex digits of its SHA-256 digest: it names the key without revealing it."""
        raw: dict[bytes | str, bytes | str] = await self._redis.hgetall(self._key)
        return sorted((as_text(d)[:KEY_ID_CHARS], as_text(c)) for d, c in raw.items())

    async def revoke_id(self, key_id: str) -> str | None:
        """Revoke the one key whose id is or starts with ``key_id`` (at least 8 hex
        digits); returns its customer, or None if no key, or more than one, matches."""
        if len(key_id) < 8 or any(c not in "0123456789abcdef" for c in key_id):
            return None
        raw: dict[bytes | str, bytes | str] = await self._redis.hgetall(self._key)
        matches = [
            (as_text(d), as_text(c)) for d, c in raw.items() if as_text(d).startswith(key_id)
        ]
        if len(matches) != 1:
            return None
        digest, customer = matches[0]
        return customer if await self._redis.hdel(self._key, digest) else None


#: Hex digits of a key's digest that name it in listings and revocations.
KEY_ID_CHARS = 12
