"""The API's TCP edge: how many connections it holds and how long a client may dawdle.

aiohttp bounds a request's size but not its pace: a client sending its headers a byte
every few seconds holds a socket (and a handler) for as long as it likes. Here:

* a connection gets ``max_connections`` overall and ``max_per_client`` per client
  address; past either it is answered 503 (saying which bound) and closed at once;
* a connection's first request headers must be complete ``header_timeout_s`` after it
  opened, or it is closed. Later requests on a kept-alive connection are bounded by
  aiohttp's keep-alive timer (``keepalive_s``, set on the runner), which a request
  still being sent does not reset;
* a request body must arrive within the settings' ``body_timeout_s``; that bound is
  kept where bodies are read (worker/api/speakings.py: 408, and the connection closed).

``GuardedProtocol`` wraps each aiohttp protocol: it forwards every call and adds one
timer per connection (no task per connection).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

#: A request's headers end with an empty line.
_END_OF_HEADERS = b"\r\n\r\n"


@dataclass(frozen=True)
class EdgeLimits:
    """The bounds above; every one configurable (worker/api/settings.py)."""

    header_timeout_s: float = 5.0
    keepalive_s: float = 15.0
    max_connections: int = 2048
    max_per_client: int = 64


@dataclass
class ConnectionCounts:
    """Open connections, overall and per client address. Pure bookkeeping."""

    limits: EdgeLimits
    total: int = 0
    by_client: dict[str, int] = field(default_factory=dict)

    def admit(self, client: str) -> str | None:
        """Count a new connection from ``client``; or say why it is refused (not counted)."""
        if self.total >= self.limits.max_connections:
            return (
                f"the API holds its most connections ({self.limits.max_connections}); "
                "try again later"
            )
        if self.by_client.get(client, 0) >= self.limits.max_per_client:
            return (
                f"too many connections from your address (at most "
                f"{self.limits.max_per_client}); reuse one or close some"
            )
        self.total += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        left = self.by_client.get(client, 0) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


def refusal_bytes(reason: str) -> bytes:
    """A complete HTTP/1.1 503 saying ``reason``, for a connection refused at the door."""
    body = json.dumps({"error": {"code": "unavailable", "message": reason}}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class GuardedProtocol(asyncio.Protocol):
    """One connection: the wrapped aiohttp protocol, behind the bounds above."""

    def __init__(self, inner: asyncio.Protocol, counts: ConnectionCounts) -> None:
        self._inner = inner
        self._counts = counts
        self._client: str | None = None  # set once counted
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head = b""  # the first request's bytes, until its headers are complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        peer: Any = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        refused = self._counts.admit(client)
        if refused is not None:
            transport.write(refusal_bytes(refused))
            transport.close()
            return
        self._client, self._transport = client, transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._counts.limits.header_timeout_s, self._too_slow)
        self._inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.abort()  # no response: the client never finished asking

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            return
        if self._timer is not None:
            # Invariant: only the tail that could hold a split end-of-headers is kept.
            self._head = self._head[-3:] + data
            if _END_OF_HEADERS in self._head:
                self._timer.cancel()
                self._timer, self._head = None, b""
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._client is None:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._client is None:
            return
        self._counts.release(self._client)
        self._client = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def guarded(
    factory: Callable[[], asyncio.Protocol], counts: ConnectionCounts
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server``: ``factory``'s protocols, guarded."""
    return lambda: GuardedProtocol(factory(), counts)
