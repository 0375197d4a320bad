"""Recognising Asterisk's ARI deadlock (asterisk/asterisk#2170): REST answers, but a new
events websocket never completes its handshake and ``GET /applications`` hangs.

A fake ARI server stands in for Asterisk here, and only here: the real deadlock is a
race that cannot be produced on demand (tests/conftest.py checks the real Asterisk for it
after every e2e test). The fake answers ``GET /asterisk/info`` and never answers the
events upgrade or ``GET /applications``, exactly as the wedged Asterisk 22.10 did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.telephony.ari import Ari, AsteriskWedged
from worker.ari import NATIVE_FORMATS, AriClient, AriState, channel_var

AUTH = ("speaking", "secret")


async def _hang(_request: web.Request) -> web.Response:
    await asyncio.Event().wait()  # never: what the deadlocked lock does
    raise AssertionError("unreachable")


async def _info(_request: web.Request) -> web.Response:
    return web.json_response({"system": {"version": "22.10.1"}})


async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # the hanging handlers are cancelled
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/ari"
    finally:
        await runner.cleanup()


@pytest.fixture
async def wedged_ari() -> AsyncIterator[str]:
    """REST answers; events connects and GET /applications hang."""
    app = web.Application()
    app.router.add_get("/ari/asterisk/info", _info)
    app.router.add_get("/ari/applications", _hang)
    app.router.add_get("/ari/events", _hang)
    async for url in _serve(app):
        yield url


@pytest.fixture
async def frozen_ari() -> AsyncIterator[str]:
    """Nothing answers (a stopped or SIGSTOPped Asterisk): not the deadlock."""
    app = web.Application()
    for path in ("/ari/asterisk/info", "/ari/applications", "/ari/events"):
        app.router.add_get(path, _hang)
    async for url in _serve(app):
        yield url


async def test_harness_names_the_deadlock_when_events_hang_but_rest_answers(
    wedged_ari: str,
) -> None:
    ari = Ari(wedged_ari, AUTH)
    try:
        with pytest.raises(AsteriskWedged, match="asterisk/asterisk#2170"):
            await ari.connect_events("harness-test", within_s=0.3)
        assert await ari.wedged(within_s=0.3)
    finally:
        await ari.close()


async def test_harness_does_not_call_a_frozen_asterisk_wedged(frozen_ari: str) -> None:
    ari = Ari(frozen_ari, AUTH)
    try:
        with pytest.raises(TimeoutError):
            await ari.connect_events("harness-test", within_s=0.3)
        assert not await ari.wedged(within_s=0.3)
    finally:
        await ari.close()


async def test_worker_reports_a_wedged_asterisk(wedged_ari: str) -> None:
    client = AriClient(wedged_ari, *AUTH, app="speaking-test", on_event=lambda _e: None)
    await client.start()
    try:
        await client._connect_timed_out()  # what the connect loop runs after its timeout
        assert client.state is AriState.WEDGED
        assert not client.connected.is_set()
    finally:
        await client.close()


async def test_worker_reports_an_unreachable_asterisk_as_down() -> None:
    client = AriClient("http://127.0.0.1:9/ari", *AUTH, app="speaking-test", on_event=print)
    await client.start()
    try:
        await client._connect_timed_out()
        assert client.state is AriState.DOWN
    finally:
        await client.close()


def test_channel_vars_come_from_the_snapshot_when_listed() -> None:
    """ari.conf's channelvars save a request per variable; absent ones say so (None)."""
    channel = {"id": "c1", "channelvars": {"SPEAKING_CUSTOMER_ID": "cust-1", NATIVE_FORMATS: ""}}
    assert channel_var(channel, "SPEAKING_CUSTOMER_ID") == "cust-1"
    assert channel_var(channel, NATIVE_FORMATS) == ""
    assert channel_var(channel, "OTHER") is None
    assert channel_var({"id": "c1"}, "SPEAKING_CUSTOMER_ID") is None
    assert channel_var(None, "SPEAKING_CUSTOMER_ID") is None
