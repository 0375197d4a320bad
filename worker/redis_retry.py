"""Riding out a Redis outage: how to connect, what counts as an outage, and a retry loop
for writes that must happen once Redis is back (a session's record, a command's reply)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Redis is unreachable, restarting or loading: try again later. (redis-py's errors are
#: not the builtin ConnectionError/TimeoutError; BusyLoadingError is a ConnectionError.)
REDIS_OUTAGE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


#: How often (at most) a Sentinel-managed pool asks the sentinels where the primary is.
CHECK_PRIMARY_S = 1.0


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (it asks the sentinels where the primary is, and again after a
    failover) with the blocking pool's cap: a caller past ``max_connections`` waits.

    redis-py alone moves a connection to a new primary only when it is made or released
    after the pool noticed, and the sentinels demote the old primary only once they poll
    it (about 10 s after a failover, measured). Until then both servers take writes, and
    a sender's BLPOP on one would miss the reply its worker wrote to the other. So at most
    every ``CHECK_PRIMARY_S`` the pool asks the sentinels, in the background of the next
    ``get_connection`` (a caller never waits for them), and on a new answer drops every
    connection, in use or not: a blocked command is tried again on the new primary, or
    fails with ConnectionError, which every caller treats as an outage (the sender
    re-sends, the worker re-reads its pending)."""

    _checked_at = float("-inf")
    _check: asyncio.Task[None] | None = None
    _seen: tuple[str, int] | None = None  # the primary the last check found
    #: How many times the sentinels named a new primary (see ``failovers``).
    switches = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._check is None and loop.time() - self._checked_at >= CHECK_PRIMARY_S:
            self._checked_at = loop.time()
            self._check = loop.create_task(self._check_primary(), name="sentinel-check")
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    async def _check_primary(self) -> None:
        try:
            found = await self.sentinel_manager.discover_master(self.service_name)
            connections = (*self._available_connections, *self._in_use_connections)
            # Compared with what this check saw last, and with where each connection
            # points: redis-py updates ``master_address`` itself when it opens a new
            # connection after a failover, and then drops only its idle connections, so a
            # command blocked on the old primary would stay there until it is demoted.
            astray = any(
                (c.host, c.port) != found
                for c in connections
                if isinstance(c, SentinelManagedConnection) and c.is_connected
            )
            if (self._seen is not None and found != self._seen) or astray:
                log.warning("the sentinels name a new primary; reconnecting")
                self.master_address = found
                self.switches += 1
                # A command's own retry reconnects to the connection's host and port, not
                # through the sentinels (redis-py 8), so they are pointed at the new one.
                for connection in connections:
                    if isinstance(connection, SentinelManagedConnection):
                        connection.host, connection.port = found
                await self.disconnect(inuse_connections=True)
            self._seen = found
        except Exception as exc:  # the next check asks again; commands fail on their own
            log.debug("sentinel check failed", extra={"error": type(exc).__name__})
        finally:
            self._check = None


def connect(url: str, max_connections: int, socket_timeout: float, wait_s: float = 2.0) -> Redis:
    """A Redis client with a capped pool (a caller waits ``wait_s`` for a free connection,
    then gets a ConnectionError) and timeouts, so a frozen Redis fails a call instead of
    hanging it. A command that meets a connection Redis closed (it restarted) is tried
    once more on a fresh one; every other retry is the caller's, with its own backoff.

    ``url`` is ``redis://``/``rediss://``/``unix://`` for one server,
    ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` for a primary
    found through Sentinel, or ``redis+cluster://[:password@]host:port[,host:port...]`` for
    a Redis Cluster (docs/scaling.md). Raises ValueError for a malformed URL."""
    scheme = url.split("://", 1)[0]
    if scheme == "redis+sentinel":
        return _sentinel(url, max_connections, socket_timeout, wait_s)
    if scheme == "redis+cluster":
        return _cluster(url, max_connections, socket_timeout)
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


def _nodes(url: str) -> tuple[list[tuple[str, int]], str | None, list[str]]:
    """(host, port) pairs, password and path parts of a multi-host URL."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    hosts = parts.netloc.rsplit("@", 1)[-1]
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{parts.scheme} URL needs host:port[,host:port...], got {item!r}")
        nodes.append((host, int(port)))
    return nodes, password, [p for p in parts.path.split("/") if p]


def _sentinel(url: str, max_connections: int, socket_timeout: float, wait_s: float) -> Redis:
    nodes, password, path = _nodes(url)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("redis+sentinel URL needs /<service name>[/<db>] after the hosts")
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": 2.0}
    # The sentinels themselves are asked with the same timeouts; the primary's password,
    # if any, is the URL's (the sentinels are assumed open on a trusted network).
    sentinel = Sentinel(nodes, sentinel_kwargs=timeouts)
    return cast(
        Redis,
        sentinel.master_for(
            path[0],
            connection_pool_class=_BlockingSentinelPool,
            max_connections=max_connections,
            timeout=wait_s,
            db=int(path[1]) if len(path) == 2 else 0,
            password=password,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
        ),
    )


def _cluster(url: str, max_connections: int, socket_timeout: float) -> Redis:
    nodes, password, _path = _nodes(url)
    # RedisCluster is not a Redis subclass but offers the same commands; every key the
    # product uses maps to one slot per command and per transaction (worker/store.py
    # Keys), so callers use it as one Redis. Its pool is per node: past max_connections
    # a command fails with MaxConnectionsError (a ConnectionError: callers retry).
    return cast(
        Redis,
        RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            password=password,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
        ),
    )


def failovers(redis: Redis) -> int:
    """How many times the primary behind ``redis`` changed (a Sentinel failover) as far as
    its pool noticed; 0 for one server or a cluster. A command retried on the new primary
    raises nothing, yet writes the old one took may be gone (e.g. a worker's XACK)."""
    return int(getattr(getattr(redis, "connection_pool", None), "switches", 0))


def pool_exhausted(exc: Exception) -> bool:
    """Whether a command never left because every pooled connection was busy (the pool
    waited ``wait_s``): not a Redis failure, so nothing sent needs sending again."""
    return isinstance(exc, RedisConnectionError) and (
        "No connection available" in str(exc) or "Too many connections" in str(exc)
    )


def unblocked_by_failover(exc: Exception) -> bool:
    """Whether a blocking command (BLPOP, XREADGROUP BLOCK) was cut short because its
    server stopped being the primary (a Sentinel failover): Redis answers ``-UNBLOCKED``.
    Treat it as an outage: retry on the new primary."""
    return isinstance(exc, ResponseError) and str(exc).startswith("UNBLOCKED")


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
