"""A small ARI client for the harness: REST calls and the events websocket.

The harness only needs a handful of requests, and it must see the channels of a
Dial() call that never enters Stasis, so it subscribes to everything
(subscribeAll) and keeps the latest snapshot of every channel and bridge.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp

Json = dict[str, Any]


class AriError(RuntimeError):
    """An ARI request answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"ARI {method} {path}: {status} {body}")
        self.status = status


class Ari:
    """REST access to one Asterisk's ARI (an aiohttp session of its own)."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"})

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()

    async def request(self, method: str, path: str, **params: str) -> Any:
        """One ARI call; the decoded JSON reply (None when empty), AriError otherwise."""
        async with self._session.request(method, self.url + path, params=params) as resp:
            body = await resp.text()
            if resp.status >= 300:
                raise AriError(method, path, resp.status, body)
            return json.loads(body) if body else None

    async def channels(self) -> list[Json]:
        """GET /channels."""
        result: list[Json] = await self.request("GET", "/channels")
        return result

    async def bridges(self) -> list[Json]:
        """GET /bridges."""
        result: list[Json] = await self.request("GET", "/bridges")
        return result

    async def hangup(self, channel_id: str) -> bool:
        """DELETE /channels/{id}; False if it was already gone."""
        try:
            await self.request("DELETE", f"/channels/{channel_id}")
        except AriError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def events(self, app: str, subscribe_all: bool = True) -> AriEvents:
        """Open the events websocket for `app` (which registers the Stasis app)."""
        ws_url = self.url.replace("http", "ws", 1) + "/events"
        params = {"app": app, "subscribeAll": "true" if subscribe_all else "false"}
        ws = await self._session.ws_connect(ws_url, params=params, heartbeat=20)
        return AriEvents(app, ws)


class AriEvents:
    """Events of one app's websocket, kept in order, with the latest state of
    every channel and bridge they mention, and a way to wait for a condition."""

    def __init__(self, app: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.app = app
        self.events: list[Json] = []
        self.channels: dict[str, Json] = {}  # id -> latest snapshot
        self.destroyed: set[str] = set()
        self.bridges: dict[str, Json] = {}
        self.stasis_channels: set[str] = set()  # entered Stasis in this app
        self.dial_peers: dict[str, str] = {}  # Dial caller id -> peer id
        self._ws = ws
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name=f"ari-events-{app}")

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event: Json = json.loads(msg.data)
            self._apply(event)
            self.events.append(event)
            self._changed.set()
            self._changed = asyncio.Event()
        self._changed.set()

    def _apply(self, event: Json) -> None:
        kind = event.get("type")
        channel = event.get("channel")
        if isinstance(channel, dict):
            self.channels[channel["id"]] = channel
            if kind == "ChannelDestroyed":
                self.destroyed.add(channel["id"])
            elif kind == "StasisStart":
                self.stasis_channels.add(channel["id"])
        if kind == "Dial" and "caller" in event and "peer" in event:
            self.dial_peers[event["caller"]["id"]] = event["peer"]["id"]
            self.channels[event["peer"]["id"]] = event["peer"]
        bridge = event.get("bridge")
        if isinstance(bridge, dict):
            if kind == "BridgeDestroyed":
                self.bridges.pop(bridge["id"], None)
            else:
                self.bridges[bridge["id"]] = bridge

    @property
    def closed(self) -> bool:
        """True once the websocket ended."""
        return self._task.done()

    def alive(self, channel_id: str) -> bool:
        """Seen and not destroyed."""
        return channel_id in self.channels and channel_id not in self.destroyed

    def bridge_of(self, *channel_ids: str) -> Json | None:
        """A bridge (latest snapshot) holding all these channels, if any."""
        for bridge in self.bridges.values():
            if all(c in bridge.get("channels", []) for c in channel_ids):
                return bridge
        return None

    async def wait_until(self, condition: Callable[[], bool], within_s: float) -> None:
        """Return once condition() holds, re-checking after each event; TimeoutError if not."""
        async with asyncio.timeout(within_s):
            while not condition():
                if self.closed:
                    raise ConnectionError("ARI events websocket closed")
                await self._changed.wait()

    async def close(self) -> None:
        """Close the websocket (unregisters the app) and stop reading."""
        await self._ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
