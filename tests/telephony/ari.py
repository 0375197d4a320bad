"""A small ARI client for the harness: REST calls and one long-lived events websocket.

Why it looks like this (asterisk/asterisk#2170, docs/media.md): closing the websocket
of an app subscribed to every device state (``subscribeAll=true``) can deadlock
Asterisk's ARI, after which every new ``/ari/events`` connect hangs while REST still
answers. So the harness never uses subscribeAll and never opens an app per test: one
app lives for the whole test session, subscribed per resource
(``POST /applications/{app}/subscription``). To see the channels of a ``Dial()`` call
that never enters Stasis it subscribes to the SIP endpoints the calls use
(``endpoint:PJSIP/caller``, ``endpoint:PJSIP/callee``), which delivers those channels'
events. Every request and every connect has a timeout; a connect that times out while
REST answers is reported as :class:`AsteriskWedged`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

Json = dict[str, Any]

REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
#: Endpoints of the test dialplan (asterisk-config/pjsip.conf): every harness call's legs.
CALL_ENDPOINTS = ("endpoint:PJSIP/caller", "endpoint:PJSIP/callee", "endpoint:PJSIP/stranger")


class AriError(RuntimeError):
    """An ARI request answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"ARI {method} {path}: {status} {body}")
        self.status = status


class AsteriskWedged(RuntimeError):
    """ARI's events websocket does not accept connections while its REST side answers:
    the deadlock of asterisk/asterisk#2170. Only an Asterisk restart clears it."""


class Ari:
    """REST access to one Asterisk's ARI (an aiohttp session of its own).

    Raises :class:`AriError` for error statuses and ``TimeoutError`` when Asterisk does
    not answer within ``REQUEST_TIMEOUT_S``.
    """

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Basic {token}"},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )

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

    async def subscribe(self, app: str, source: str) -> None:
        """Subscribe ``app`` to one event source (``channel:``, ``bridge:``, ``endpoint:``)."""
        await self.request("POST", f"/applications/{app}/subscription", eventSource=source)

    async def rest_answers(self, within_s: float = 3.0) -> bool:
        """Whether ``GET /asterisk/info`` answers within ``within_s`` seconds."""
        try:
            async with asyncio.timeout(within_s):
                await self.request("GET", "/asterisk/info")
        except (TimeoutError, aiohttp.ClientError, AriError, OSError):
            return False
        return True

    async def wedged(self, within_s: float = 5.0) -> bool:
        """True when Asterisk's ARI is deadlocked (asterisk#2170): REST answers, but
        ``GET /applications``, which takes the lock the deadlock holds, does not."""
        try:
            async with asyncio.timeout(within_s):
                await self.request("GET", "/applications")
        except TimeoutError:
            return await self.rest_answers(within_s)
        except (aiohttp.ClientError, AriError, OSError):
            return False  # down or refusing: not the deadlock
        return False

    async def connect_events(
        self, app: str, within_s: float = CONNECT_TIMEOUT_S
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the events websocket of ``app`` (never subscribeAll).

        Raises AsteriskWedged if the connect times out while REST answers, TimeoutError
        or aiohttp.ClientError if Asterisk is simply not there.
        """
        ws_url = self.url.replace("http", "ws", 1) + "/events"
        params = {"app": app, "subscribeAll": "false"}
        try:
            async with asyncio.timeout(within_s):
                return await self._session.ws_connect(ws_url, params=params, heartbeat=20)
        except TimeoutError:
            if await self.rest_answers(within_s):
                raise AsteriskWedged(
                    f"ARI events connect for app {app} timed out after {within_s} s while "
                    "REST answers: Asterisk's ARI is deadlocked (asterisk/asterisk#2170); "
                    "only a restart clears it"
                ) from None
            raise

    async def events(
        self,
        app: str,
        sources: Iterable[str] = CALL_ENDPOINTS,
        within_s: float = CONNECT_TIMEOUT_S,
        on_event: Callable[[Json], None] | None = None,
    ) -> AriEvents:
        """A long-lived events reader for ``app``, subscribed to ``sources``; ``on_event``
        is called with each event as it arrives (it must not block)."""
        events = AriEvents(self, app, tuple(sources), on_event)
        await events.connect(within_s)
        return events


class AriEvents:
    """Events of one long-lived app, kept in order, with the latest state of every
    channel they mention, and a way to wait for a condition.

    The websocket reconnects by itself if Asterisk restarts (subscriptions are made
    again, and channels that vanished meanwhile are marked destroyed from
    ``GET /channels``). If a reconnect finds Asterisk wedged, every wait raises
    :class:`AsteriskWedged` until :meth:`connect` succeeds again.
    """

    def __init__(
        self,
        ari: Ari,
        app: str,
        sources: tuple[str, ...],
        on_event: Callable[[Json], None] | None = None,
    ) -> None:
        self.ari = ari
        self.on_event = on_event
        self.app = app
        self.sources = sources
        self.events: list[Json] = []
        self.channels: dict[str, Json] = {}  # id -> latest snapshot
        self.destroyed: set[str] = set()
        self.stasis_channels: set[str] = set()  # entered Stasis in this app
        self.dial_peers: dict[str, str] = {}  # Dial caller id -> peer id
        self.connects = 0
        self.problem: BaseException | None = None  # why the reader stopped, if it did
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._live = False  # connected and subscribed: no event of a new call is missed
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def connect(self, within_s: float = CONNECT_TIMEOUT_S) -> None:
        """(Re)connect, subscribe, reconcile, and start reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._open(within_s)
        self.problem = None
        self._task = asyncio.create_task(self._read(), name=f"ari-events-{self.app}")

    async def _open(self, within_s: float) -> None:
        self._live = False
        if self._ws is not None:
            await self._ws.close()
        self._ws = await self.ari.connect_events(self.app, within_s)
        for source in self.sources:
            await self.ari.subscribe(self.app, source)
        if self.connects:  # events were missed while disconnected
            alive = {c["id"] for c in await self.ari.channels()}
            self.destroyed |= {c for c in self.channels if c not in alive}
        self.connects += 1
        self._live = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _read(self) -> None:
        backoff = 0.2
        try:
            while True:
                assert self._ws is not None
                async for msg in self._ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        event: Json = json.loads(msg.data)
                        self._apply(event)
                        self.events.append(event)
                        if self.on_event is not None:
                            self.on_event(event)
                        self._notify()
                # Closed: Asterisk went away (a test restarts it). Come back when it does.
                self._live = False
                self._notify()
                while True:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    try:  # AsteriskWedged is not retried: it ends the reader, below
                        await self._open(CONNECT_TIMEOUT_S)
                        backoff = 0.2
                        break
                    except (TimeoutError, aiohttp.ClientError, AriError, OSError):
                        continue
        except Exception as exc:
            self.problem = exc
            self._notify()

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

    @property
    def connected(self) -> bool:
        """True while the websocket is open and subscribed."""
        return self._live and self._ws is not None and not self._ws.closed

    async def ready(self, within_s: float = 15.0) -> None:
        """Wait until connected (after an Asterisk restart, until the reconnect): a call
        placed before that would have its first events missed."""
        await self.wait_until(lambda: self.connected, within_s)

    def alive(self, channel_id: str) -> bool:
        """Seen and not destroyed."""
        return channel_id in self.channels and channel_id not in self.destroyed

    async def wait_until(self, condition: Callable[[], bool], within_s: float) -> None:
        """Return once condition() holds, re-checking after each event; TimeoutError if
        not within ``within_s``; the reader's problem (e.g. AsteriskWedged) if it died."""
        async with asyncio.timeout(within_s):
            while not condition():
                if self.problem is not None:
                    raise self.problem
                await self._changed.wait()

    async def close(self) -> None:
        """Stop reading and close the websocket (the app has no device-state
        subscription, so its deactivation cannot hit asterisk#2170)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await self._ws.close()
