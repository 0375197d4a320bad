"""Riding out a Redis outage: what counts as one, and a retry loop for writes that must
happen once Redis is back (a session's record, a command's reply)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Redis is unreachable, restarting or loading: try again later. (redis-py's errors are
#: not the builtin ConnectionError/TimeoutError; BusyLoadingError is a ConnectionError.)
REDIS_OUTAGE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


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
