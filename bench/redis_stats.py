"""What a Redis server did between two moments: calls per command, bytes, CPU.

Read from ``INFO stats cpu commandstats`` on a client of its own. The INFO calls are the
bench's, not the product's: the ``info`` command is left out of the counts, and the
bytes of the one INFO reply that falls inside a window (the first snapshot's, which
Redis counts after it took the figures) are subtracted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

_INFO = ("INFO", "stats", "cpu", "commandstats")
#: A RESP bulk reply is framed by ``$<len>\r\n`` ... ``\r\n``; the request is an array.
_REQUEST_BYTES = len("*4\r\n") + sum(len(f"${len(p)}\r\n{p}\r\n") for p in _INFO)


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    calls: dict[str, int]  # command name (lower case, e.g. "xadd", "client|setname") -> calls
    net_in: int
    net_out: int
    cpu_s: float  # used_cpu_user + used_cpu_sys of the server
    info_reply_bytes: int  # the size of this snapshot's own reply, as Redis sent it


@dataclass(frozen=True)
class Delta:
    """Between two snapshots, with the bench's own INFO traffic taken out."""

    seconds: float
    calls: dict[str, int] = field(default_factory=dict)
    net_in: int = 0
    net_out: int = 0
    cpu_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def minus(self, rate: Delta) -> Delta:
        """This window less ``rate``'s per-second background over this window's length."""
        scale = self.seconds / rate.seconds if rate.seconds else 0.0
        names = set(self.calls) | set(rate.calls)
        return Delta(
            self.seconds,
            {n: round(self.calls.get(n, 0) - rate.calls.get(n, 0) * scale) for n in names},
            round(self.net_in - rate.net_in * scale),
            round(self.net_out - rate.net_out * scale),
            self.cpu_s - rate.cpu_s * scale,
        )

    def per(self, divisor: float) -> dict[str, Any]:
        """Every figure divided by ``divisor`` (sessions x seconds, locates, ...)."""
        calls = {n: round(c / divisor, 3) for n, c in sorted(self.calls.items()) if c}
        return {
            "ops": round(self.total / divisor, 3),
            "by_command": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
            "bytes_in": round(self.net_in / divisor, 1),
            "bytes_out": round(self.net_out / divisor, 1),
            "redis_cpu_us": round(self.cpu_s * 1e6 / divisor, 1),
        }


class RedisStats:
    """Snapshots of one Redis server's counters."""

    def __init__(self, url: str) -> None:
        self._redis = Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        # The raw text, not redis-py's parsed dict: its length is what Redis sent.
        self._redis.set_response_callback("INFO", lambda response, **_: response)

    async def snapshot(self) -> Snapshot:
        raw: bytes = await self._redis.execute_command(*_INFO)  # type: ignore[no-untyped-call]
        values: dict[str, str] = {}
        calls: dict[str, int] = {}
        for line in raw.decode().splitlines():
            name, sep, value = line.partition(":")
            if not sep:
                continue
            if name.startswith("cmdstat_"):
                stats = dict(part.split("=", 1) for part in value.split(","))
                calls[name.removeprefix("cmdstat_")] = int(stats["calls"])
            else:
                values[name] = value
        return Snapshot(
            at=time.monotonic(),
            calls=calls,
            net_in=int(values["total_net_input_bytes"]),
            net_out=int(values["total_net_output_bytes"]),
            cpu_s=float(values["used_cpu_user"]) + float(values["used_cpu_sys"]),
            info_reply_bytes=len(raw) + len(f"${len(raw)}\r\n\r\n"),
        )

    @staticmethod
    def delta(before: Snapshot, after: Snapshot) -> Delta:
        names = set(before.calls) | set(after.calls)
        calls = {n: after.calls.get(n, 0) - before.calls.get(n, 0) for n in names}
        calls.pop("info", None)
        return Delta(
            seconds=after.at - before.at,
            calls={n: c for n, c in calls.items() if c},
            net_in=after.net_in - before.net_in - _REQUEST_BYTES,
            net_out=after.net_out - before.net_out - before.info_reply_bytes,
            cpu_s=after.cpu_s - before.cpu_s,
        )

    async def close(self) -> None:
        await self._redis.aclose()
