"""Riding out a Redis outage: how to connect, what counts as an outage, and a retry loop
for writes that must happen once Redis is back (a session's record, a command's reply)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Redis is unreachable, restarting or loading: try again later. (redis-py's errors are
#: not the builtin ConnectionError/TimeoutError; BusyLoadingError is a ConnectionError.)
REDIS_OUTAGE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


def connect(url: str, max_connections: int, socket_timeout: float, wait_s: float = 2.0) -> Redis:
    """A Redis client with a capped pool (a caller waits ``wait_s`` for a free connection,
    then gets a ConnectionError) and timeouts, so a frozen Redis fails a call instead of
    hanging it. A command that meets a connection Redis closed (it restarted) is tried
    once more on a fresh one; every other retry is the caller's, with its own backoff."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_s,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    return Redis(connection_pool=pool)


def backoff(attempt: int, first: float = 0.1, most: float = 1.0) -> float:
    """Delay before retry ``attempt`` (1, 2, ...): doubling from ``first`` up to ``most``."""
    return float(min(first * 2 ** (attempt - 1), most))


async def retry_through_outage(call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, retried with backoff for as long as Redis is unreachable. Any other
    error is raised. Cancelling the caller ends the retries (shutdown)."""
    attempt = 0
    while True:
        try:
            return await call()
        except REDIS_OUTAGE as exc:
            attempt += 1
            if attempt == 1:
                log.warning("redis unavailable; retrying", extra={"error": type(exc).__name__})
            await asyncio.sleep(backoff(attempt))
