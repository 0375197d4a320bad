"""Distributed Redis set-ups for the tests, from Debian's redis-server: a 3-primary Redis
Cluster and a Sentinel-managed primary with a replica and three sentinels. Each runs on
ports of its own beside the suite's Redis, is started empty and stopped afterwards (the
guardian stops a node a killed run left behind: scripts/redis.sh, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from tests.conftest import REDIS_PORT, redis_ctl

CLUSTER_PORTS = tuple(REDIS_PORT + 71 + i for i in range(3))
SENTINEL_PRIMARY = REDIS_PORT + 81
SENTINEL_REPLICA = REDIS_PORT + 82
SENTINEL_PORTS = tuple(REDIS_PORT + 83 + i for i in range(3))
SERVICE = "speaking"  # the name scripts/redis.sh --sentinel monitors


async def until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 30.0) -> None:
    """Poll ``check`` every 0.1 s: a topology's convergence announces nothing to await."""
    try:
        async with asyncio.timeout(within_s):
            while not await check():  # noqa: ASYNC110 (nothing to await: see docstring)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what} within {within_s} s") from None


async def ask(port: int, *command: str) -> Any:
    """One command to the server on ``port``, on a connection of its own."""
    async with Redis(
        port=port, socket_timeout=5, socket_connect_timeout=2, decode_responses=True
    ) as redis:
        return await redis.execute_command(*command)  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def redis_cluster() -> AsyncIterator[str]:
    """A 3-primary cluster (no replicas) covering all 16,384 slots; yields its
    ``redis+cluster://`` URL naming two of the nodes (the client discovers the third)."""
    started: list[int] = []
    try:
        for port in CLUSTER_PORTS:
            started.append(port)
            await asyncio.to_thread(redis_ctl, "start", port, "--empty", "--cluster")
        nodes = [f"127.0.0.1:{p}" for p in CLUSTER_PORTS]
        await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )

        async def ok() -> bool:
            for port in CLUSTER_PORTS:
                if "cluster_state:ok" not in await ask(port, "CLUSTER", "INFO"):
                    return False
            return True

        await until(ok, "the cluster was not ok")
        yield f"redis+cluster://{nodes[0]},{nodes[1]}"
    finally:
        for port in started:
            await asyncio.to_thread(redis_ctl, "stop", port)


async def keys_per_node() -> dict[int, int]:
    """How many keys each cluster node holds."""
    return {port: int(await ask(port, "DBSIZE")) for port in CLUSTER_PORTS}


@dataclass(frozen=True)
class SentinelSet:
    """A primary, its replica and three sentinels watching them as ``speaking``."""

    url: str

    async def primary(self) -> int:
        """The port the sentinels name as primary."""
        host_port = await ask(SENTINEL_PORTS[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(host_port[1])

    async def failover(self) -> int:
        """Promote the replica (``SENTINEL FAILOVER``) and return once every sentinel
        names it and it serves writes; returns the new primary's port."""
        old = await self.primary()
        await ask(SENTINEL_PORTS[0], "SENTINEL", "FAILOVER", SERVICE)

        async def moved() -> bool:
            for port in SENTINEL_PORTS:
                addr = await ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                if int(addr[1]) == old:
                    return False
            role = await ask(await self.primary(), "ROLE")
            return bool(role[0] == "master")

        await until(moved, "the sentinels did not fail over")
        return await self.primary()


@contextlib.asynccontextmanager
async def redis_sentinel() -> AsyncIterator[SentinelSet]:
    """Yields the set once the replica is in sync and every sentinel knows the replica
    and the other two (so a failover can start at once)."""
    started: list[int] = []
    try:
        started.append(SENTINEL_PRIMARY)
        await asyncio.to_thread(redis_ctl, "start", SENTINEL_PRIMARY, "--empty")
        started.append(SENTINEL_REPLICA)
        await asyncio.to_thread(
            redis_ctl, "start", SENTINEL_REPLICA, "--empty", "--replica-of", str(SENTINEL_PRIMARY)
        )
        for port in SENTINEL_PORTS:
            started.append(port)
            await asyncio.to_thread(
                redis_ctl, "start", port, "--empty", "--sentinel", str(SENTINEL_PRIMARY)
            )

        async def ready() -> bool:
            async with Redis(port=SENTINEL_REPLICA, socket_timeout=5) as replica:
                if (await replica.info("replication")).get("master_link_status") != "up":
                    return False
            for port in SENTINEL_PORTS:
                replicas = await ask(port, "SENTINEL", "REPLICAS", SERVICE)
                others = await ask(port, "SENTINEL", "SENTINELS", SERVICE)
                if not replicas or len(others) < len(SENTINEL_PORTS) - 1:
                    return False
            return True

        await until(ready, "the sentinel set did not settle", within_s=40)
        hosts = ",".join(f"127.0.0.1:{p}" for p in SENTINEL_PORTS)
        yield SentinelSet(f"redis+sentinel://{hosts}/{SERVICE}")
    finally:
        for port in reversed(started):
            await asyncio.to_thread(redis_ctl, "stop", port)
