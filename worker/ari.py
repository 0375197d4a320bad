"""A thin asyncio client for the Asterisk REST Interface: the calls the worker needs.

Credentials travel in an ``Authorization`` header only, never in a URL (ARI also
accepts ``?api_key=``, which ends up in access logs). Events arrive on one
websocket and are handed, in arrival order, to one synchronous callback: with no
await between two events, events of a channel can never be handled out of order.
The websocket reconnects with exponential backoff; ``on_connect`` runs after
each (re)connection so the owner can resynchronise.

The app never subscribes to everything (``subscribeAll``): closing such an app's
websocket can deadlock Asterisk's ARI (asterisk/asterisk#2170, docs/media.md), through
its device-state subscriptions. It subscribes to channels and bridges one by one, or,
with the channel directory on, to all *channels* (``channel:``), which feeds the
ChannelDirectory (worker/channel_directory.py).
(60 connect/subscribe-all-channels/close cycles in a row left 22.10 answering.) A
connect that times out while REST still answers is that deadlock: the client reports
it (``state`` is ``wedged``) and keeps retrying, since only an Asterisk restart clears
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from worker.channel_directory import ChannelDirectory

log = logging.getLogger(__name__)

Json = dict[str, Any]

REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0

#: Concurrent ARI requests at most; more wait for a free connection. Asterisk counts
#: each connection, and each media websocket, against http.conf's ``sessionlimit``
#: (asterisk-config/http.conf raises it to 1,000 from 100).
ARI_CONNECTIONS = 100


class AriState(enum.StrEnum):
    """The events connection, as ``/healthz`` reports it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DOWN = "down"  # Asterisk does not answer at all
    WEDGED = "wedged"  # REST answers, events connects hang: asterisk#2170


class AriError(Exception):
    """ARI answered with an error status."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"ARI {method} {path} -> {status}: {message}")
        self.status = status


class AriClient:
    """REST calls and the events websocket of one Asterisk, for one Stasis application."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        app: str,
        on_event: Callable[[Json], None],
        on_connect: Callable[[], Awaitable[None]] | None = None,
        channel_directory: bool = False,
    ) -> None:
        """``channel_directory``: subscribe to all channels and keep the directory (see
        ``channel``); without it every lookup is a request."""
        self.base_url = base_url.rstrip("/")
        self._directory_wanted = channel_directory
        self.app = app
        self._auth = aiohttp.encode_basic_auth(user, password)
        self._on_event = on_event
        self._on_connect = on_connect
        self._http: aiohttp.ClientSession | None = None
        self._media_http: aiohttp.ClientSession | None = None
        self._events_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.state = AriState.CONNECTING
        self.reconnects = 0
        #: Every channel of this Asterisk, kept from events (see ``channel``).
        self.directory = ChannelDirectory()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            # A pool of keep-alive connections shared by every session's requests (each
            # new one costs Asterisk a TCP handshake and an HTTP thread).
            # Idle ones are closed before Asterisk's own 15 s keep-alive closes them.
            connector=aiohttp.TCPConnector(limit=ARI_CONNECTIONS, keepalive_timeout=10),
            headers={"Authorization": self._auth},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )
        self._media_http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # one per session: bounded by them
            headers={"Authorization": self._auth},
        )
        self._events_task = asyncio.create_task(self._events_forever(), name="ari-events")

    async def close(self) -> None:
        if self._events_task:
            self._events_task.cancel()
            await asyncio.gather(self._events_task, return_exceptions=True)
        if self._http:
            await self._http.close()
        if self._media_http:
            await self._media_http.close()

    # -- REST ---------------------------------------------------------------------------

    async def request(self, method: str, path: str, **params: str) -> Any:
        """One REST call. Raises AriError for an error status, aiohttp/OS errors and
        TimeoutError when Asterisk does not answer."""
        try:
            return await self._request(method, path, params)
        except aiohttp.ServerDisconnectedError:
            # A pooled connection Asterisk had just closed (its idle keep-alive ran
            # out, or its HTTP session limit): the request never reached it. Once more,
            # on a fresh connection.
            return await self._request(method, path, params)

    async def _request(self, method: str, path: str, params: dict[str, str]) -> Any:
        assert self._http is not None, "start() first"
        url = f"{self.base_url}{path}"
        async with self._http.request(method, url, params=params or None) as resp:
            body = await resp.text()
            if resp.status >= 400:
                try:
                    message = json.loads(body).get("message", body)
                except ValueError:
                    message = body
                raise AriError(resp.status, method, path, str(message)[:200])
            return json.loads(body) if body else None

    async def info(self) -> Json:
        result: Json = await self.request("GET", "/asterisk/info")
        return result

    async def get_channel(self, channel_id: str) -> Json | None:
        try:
            result: Json = await self.request("GET", f"/channels/{quote(channel_id, safe='')}")
            return result
        except AriError as exc:
            if exc.status == 404:
                return None
            raise

    async def channel(self, channel_id: str) -> Json | None:
        """The channel as the directory knows it (no request), or from Asterisk while the
        directory cannot say (the events connection is down or not yet seeded). Its JSON
        has ``id``, ``name``, ``state`` and ``channelvars``. Raises ARI failures."""
        known, channel = self.directory.lookup(channel_id, self.reconnects)
        if known and self.connected.is_set():
            return channel
        return await self.get_channel(channel_id)

    async def get_variable(self, channel_id: str, variable: str) -> str | None:
        """A channel variable or function; None if the channel does not exist. Cheaper
        when ari.conf lists it in ``channelvars``: see channel_var."""
        try:
            reply = await self.request(
                "GET", f"/channels/{quote(channel_id, safe='')}/variable", variable=variable
            )
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return str(reply.get("value", "")) if reply else None

    async def list_channels(self) -> list[Json]:
        result: list[Json] = await self.request("GET", "/channels")
        return result

    async def list_bridges(self) -> list[Json]:
        result: list[Json] = await self.request("GET", "/bridges")
        return result

    async def get_bridge(self, bridge_id: str) -> Json | None:
        try:
            result: Json = await self.request("GET", f"/bridges/{quote(bridge_id, safe='')}")
            return result
        except AriError as exc:
            if exc.status == 404:
                return None
            raise

    async def originate(
        self, endpoint: str, channel_id: str, other_channel_id: str, formats: str
    ) -> Json:
        """Dial ``endpoint`` into this app (``POST /channels``) offering only ``formats``
        (e.g. ``ulaw``). For a Local channel the ;1 half (``channel_id``) enters Stasis
        and the ;2 half runs the dialplan."""
        result: Json = await self.request(
            "POST",
            "/channels",
            endpoint=endpoint,
            app=self.app,
            channelId=channel_id,
            otherChannelId=other_channel_id,
            formats=formats,
        )
        return result

    async def snoop(self, channel_id: str, snoop_id: str, whisper: str) -> Json:
        result: Json = await self.request(
            "POST",
            f"/channels/{quote(channel_id, safe='')}/snoop",
            app=self.app,
            snoopId=snoop_id,
            whisper=whisper,
            spy="none",
        )
        return result

    async def external_media(self, channel_id: str, external_host: str, fmt: str) -> Json:
        result: Json = await self.request(
            "POST",
            "/channels/externalMedia",
            app=self.app,
            channelId=channel_id,
            external_host=external_host,
            format=fmt,
            encapsulation="rtp",
            transport="udp",
            direction="both",
        )
        return result

    async def external_media_websocket(self, channel_id: str, fmt: str) -> Json:
        """chan_websocket external media, Asterisk acting as the websocket server."""
        result: Json = await self.request(
            "POST",
            "/channels/externalMedia",
            app=self.app,
            channelId=channel_id,
            external_host="INCOMING",
            transport="websocket",
            encapsulation="none",
            connection_type="server",
            format=fmt,
            direction="both",
        )
        return result

    @property
    def media_http(self) -> aiohttp.ClientSession:
        """The authenticated HTTP session for media websockets. Not the REST one: a
        websocket holds its connection for the whole session, and 100 of them took every
        connection of the REST pool, so setups waited for requests that could not start
        (10 s at 100 wideband sessions, bench/load.py --transport websocket)."""
        assert self._media_http is not None, "start() first"
        return self._media_http

    async def create_bridge(self, bridge_id: str, name: str) -> Json:
        result: Json = await self.request(
            "POST", "/bridges", type="mixing", bridgeId=bridge_id, name=name
        )
        return result

    async def add_to_bridge(self, bridge_id: str, *channel_ids: str) -> None:
        await self.request(
            "POST",
            f"/bridges/{quote(bridge_id, safe='')}/addChannel",
            channel=",".join(channel_ids),
        )

    async def hangup(self, channel_id: str) -> bool:
        """Hang up a channel; False if it was already gone."""
        return await self._delete(f"/channels/{quote(channel_id, safe='')}")

    async def destroy_bridge(self, bridge_id: str) -> bool:
        return await self._delete(f"/bridges/{quote(bridge_id, safe='')}")

    async def subscribe(self, event_source: str) -> None:
        await self.request(
            "POST",
            f"/applications/{quote(self.app, safe='')}/subscription",
            eventSource=event_source,
        )

    async def unsubscribe(self, event_source: str) -> None:
        """Best effort, never raises: a subscription dies with its channel anyway, and
        cleanup paths (teardown while Asterisk is unreachable) must go on to the end."""
        # AriError: 400/404/422 when it is already gone; OSError: Asterisk unreachable.
        with contextlib.suppress(AriError, OSError):
            await self.request(
                "DELETE",
                f"/applications/{quote(self.app, safe='')}/subscription",
                eventSource=event_source,
            )

    async def _delete(self, path: str) -> bool:
        try:
            await self.request("DELETE", path)
            return True
        except AriError as exc:
            if exc.status == 404:
                return False
            raise

    # -- events -------------------------------------------------------------------------

    async def _events_forever(self) -> None:
        assert self._http is not None
        url = self.base_url.replace("http", "ws", 1) + "/events"
        params = {"app": self.app, "subscribeAll": "false"}
        backoff = 0.1
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    ws = await self._http.ws_connect(url, params=params, heartbeat=15)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                await self._connect_timed_out()
            except (aiohttp.ClientError, OSError) as exc:
                self.state = AriState.DOWN
                log.warning("ari events unavailable", extra={"error": type(exc).__name__})
            else:
                await self._serve(ws)
                backoff = 0.1
            self.connected.clear()
            self.reconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)

    async def _connect_timed_out(self) -> None:
        try:
            await asyncio.wait_for(self.info(), timeout=3.0)
        except (AriError, aiohttp.ClientError, OSError, TimeoutError):
            self.state = AriState.DOWN
            log.warning("ari events connect timed out; Asterisk does not answer")
            return
        self.state = AriState.WEDGED
        log.error(
            "ari events connect timed out while ARI REST answers: Asterisk's ARI is "
            "deadlocked (asterisk/asterisk#2170); only an Asterisk restart clears it",
            extra={"app": self.app},
        )

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read one connection's events until it closes."""
        async with ws:
            try:
                await self._seed_directory()
                self.state = AriState.CONNECTED
                self.connected.set()
                log.info("ari events connected", extra={"app": self.app})
                if self._on_connect is not None:
                    await self._on_connect()
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        self._dispatch(msg.data)
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                log.warning("ari events connection closed", extra={"app": self.app})
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("ari events connection lost", extra={"error": type(exc).__name__})
            except Exception:
                log.exception("ari events handler failed")
            finally:
                self.connected.clear()
                self.directory.forget()
                self.state = AriState.CONNECTING

    async def _seed_directory(self) -> None:
        """Subscribe to all channels, then list them: events of this connection are read
        only after this returns, so the ones that came meanwhile apply on top of the
        listing. Without it (Asterisk refused) lookups fall back to requests."""
        if not self._directory_wanted:
            return
        try:
            await self.subscribe("channel:")
            self.directory.seed(await self.list_channels(), self.reconnects)
        except (AriError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("channel directory unavailable", extra={"error": type(exc).__name__})

    def _dispatch(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            log.warning("ari sent a non-JSON event")
            return
        self.directory.apply(event)
        try:
            self._on_event(event)
        except Exception:
            log.exception("ari event handler failed", extra={"event_type": event.get("type")})


#: The call's codec(s), which decide 8 or 16 kHz (worker/media_format.py).
NATIVE_FORMATS = "CHANNEL(audionativeformat)"


def channel_var(channel: Json | None, name: str) -> str | None:
    """``name`` as the channel's JSON carries it, or None if it does not. Asterisk puts
    the variables and functions ari.conf lists in ``channelvars`` into every channel
    snapshot (asterisk-config/ari.conf lists the owner variable and NATIVE_FORMATS), so
    a locate or a create reads them with the channel instead of one request each."""
    values = channel.get("channelvars") if channel else None
    if isinstance(values, dict) and name in values:
        return str(values[name])
    return None
