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

from aiohttp import web
from redis.asyncio import Redis


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.query.get("token") or request.query.get("accesskey") or None


class KeyStore:
    """The customer behind each API key."""

    def __init__(self, redis: Redis, prefix: str = "speaking") -> None:
        self._redis = redis
        self._key = f"{prefix}:apikeys"

    async def customer_for(self, key: str) -> str | None:
        customer = await self._redis.hget(self._key, _digest(key))
        if customer is None:
            return None
        return customer.decode() if isinstance(customer, bytes) else str(customer)

    async def add(self, customer_id: str, key: str | None = None) -> str:
        """A new key for the customer (ValueError for an empty customer id)."""
        if not customer_id:
            raise ValueError("a key needs a customer id")
        key = key or secrets.token_urlsafe(32)
        await self._redis.hset(self._key, _digest(key), customer_id)
        return key

    async def revoke(self, key: str) -> bool:
        return bool(await self._redis.hdel(self._key, _digest(key)))
