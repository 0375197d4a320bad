"""The UDP socket a session sends its RTP from (and that Asterisk's external media
channel sends to: what arrives is counted and dropped, the worker only talks)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0
        #: Datagrams the kernel refused (asyncio drops them and reports each here).
        self.send_errors = 0
        self.last_error = ""

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received += 1

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1
        self.last_error = type(exc).__name__


class RtpSocket:
    """One bound UDP socket; ``send`` never blocks (the kernel drops on overflow)."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.local_host, self.local_port = transport.get_extra_info("sockname")[:2]
        self.remote: tuple[str, int] | None = None

    @classmethod
    async def open(cls, host: str) -> RtpSocket:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Protocol, local_addr=(host, 0))
        return cls(transport, protocol)

    def send(self, packet: bytes) -> None:
        if self.remote is not None and not self._transport.is_closing():
            self._transport.sendto(packet, self.remote)

    @property
    def received(self) -> int:
        return self._protocol.received

    def close(self) -> None:
        if self._protocol.send_errors:  # frames that never left: say so once, at the end
            log.warning(
                "rtp frames refused by the kernel",
                extra={"count": self._protocol.send_errors, "error": self._protocol.last_error},
            )
        self._transport.close()
