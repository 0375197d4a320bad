"""The edges hold, probed as an attacker with a valid key would, against the real API,
worker, Asterisk and SIPp: one call is one session however its id is spelled, ids that
are no Asterisk id are refused with the rule, a caller cannot choose its call's owner,
and nothing a request carries can forge a log line. Every refusal is checked to have
changed nothing: the session already on the call is still the only one, still active.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.e2e.api_fixtures import Api, start_api, stop_api
from tests.e2e.conftest import CallFactory
from tests.e2e.processes import REDIS_URL, free_port
from tests.e2e.test_api import create, post_create, wait_active
from tests.telephony.ari import AriError

pytestmark = pytest.mark.e2e

MALFORMED = {
    "NUL inside": "{id}\u0000x",
    "dot dot": "..",
    "dot": ".",
    "slash": "{id}/../x",
    "newline": "{id}\nx",
    "escape sequence": "{id}\u001b[2J",
    "line separator": "{id}\u2028",
    "non-ASCII letter": "pbx0-é",
    "too long": "a" * 129,
}
RULE = "each a letter, a digit or one of . _ - + : @ (and not only dots)"


async def sessions_on(api: Api, reference_id: str) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/v1.0/speakings?page_size=100")
    assert status == 200, body
    return [s for s in body["result"] if s["reference_id"] == reference_id]


async def test_aliases_of_one_call_are_one_session(api: Api, call: CallFactory) -> None:
    """With a session active on a call, a create for the same id in another case (Asterisk
    finds the channel either way) is 409 naming the existing session, and malformed
    variants (NUL, control characters, separators, '..') are 400 with the rule; the
    first session is still the only one on the call, and still active."""
    async with call() as c:
        first = await create(api, c)
        await wait_active(api, first["id"])
        upper = c.caller_channel_id.upper()
        assert upper != c.caller_channel_id
        status, body = await post_create(api, upper, direction="both")
        assert status == 409, body
        assert body["error"]["details"]["existing_speaking_id"] == first["id"], body
        for name, template in MALFORMED.items():
            status, body = await post_create(api, template.format(id=c.caller_channel_id))
            assert status == 400, (name, body)
            assert RULE in body["error"]["message"], (name, body)
        for reference_type in ("call", "confbridge"):
            status, body = await api.call(
                "POST",
                "/v1.0/speakings",
                json={"reference_type": reference_type, "reference_id": "..", "language": "en-US"},
            )
            assert status == 400 and RULE in body["error"]["message"], (reference_type, body)
        on_call = await sessions_on(api, c.caller_channel_id)
        assert [s["id"] for s in on_call if s["status"] != "stopped"] == [first["id"]]
        assert (await api.call("GET", f"/v1.0/speakings/{first['id']}"))[1]["status"] == "active"
        assert (await api.call("POST", f"/v1.0/speakings/{first['id']}/stop"))[0] == 200


async def test_a_created_session_names_the_call_as_asterisk_spells_it(
    api: Api, call: CallFactory
) -> None:
    """A create naming the call in another case attaches to that call, and the session
    (and its lock) carry the channel's own id."""
    async with call() as c:
        status, body = await post_create(api, c.caller_channel_id.upper(), direction="in")
        assert status == 201, body
        assert body["reference_id"] == c.caller_channel_id
        await wait_active(api, body["id"])
        status, again = await post_create(api, c.caller_channel_id, direction="in")
        assert status == 409 and again["error"]["details"]["existing_speaking_id"] == body["id"]
        assert (await api.call("POST", f"/v1.0/speakings/{body['id']}/stop"))[0] == 200


async def test_a_caller_cannot_choose_the_owner_of_its_call(api: Api, call: CallFactory) -> None:
    """A call from a SIP peer the operator did not mark trusted (the endpoint "stranger",
    127.0.0.2) carries X-Customer-Id: cust-1; the header is ignored, the call has no
    owner, and cust-1's create is 404 as for a call that does not exist."""
    async with call(caller_ip="127.0.0.2", customer_id="cust-1") as c:
        with pytest.raises(AriError) as unset:  # never set on the channel
            await c.ari.request(
                "GET",
                f"/channels/{c.caller_channel_id}/variable",
                variable="SPEAKING_CUSTOMER_ID",
            )
        assert unset.value.status == 404
        status, body = await post_create(api, c.caller_channel_id)
        assert status == 404, body
        assert await sessions_on(api, c.caller_channel_id) == []


async def test_what_a_request_carries_cannot_forge_a_log_line(api: Api) -> None:
    """Paths and bodies with newlines, NEL, U+2028, CSI sequences and NUL: every line the
    API logged since is one JSON object of printable ASCII."""
    lines = api.process.lines
    before = len(lines)
    nasty = ["a\nb", "a\u0085b", "a\u2028b", "\u001b[2J\u001b[31m", "a\u0000b", '"}\n{"x":"']
    for text in nasty:
        await api.call("GET", "/v1.0/speakings/" + quote(text, safe=""))
        await api.call("POST", "/v1.0/speakings", json={"reference_id": text})
    marker = f"/v1.0/speakings/end-of-probes-{uuid.uuid4().hex}"
    await api.call("GET", marker)
    async with asyncio.timeout(10):  # the log is read from the process's stderr
        while not any(marker in line for line in lines[before:]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    written = lines[before:]
    assert len(written) >= 2 * len(nasty)
    for line in written:
        line = line.rstrip("\n")
        assert all(" " <= ch <= "~" for ch in line), line
        assert isinstance(json.loads(line), dict)


@pytest.fixture
async def strict_api(redis: Redis, tmp_path: Path) -> AsyncIterator[Api]:
    """An API process with tight edge bounds, so slow clients are cut off quickly."""
    running = await start_api(
        redis,
        tmp_path / "strict-api.log",
        SPEAKING_API_HEADER_TIMEOUT_S="1.5",
        SPEAKING_API_BODY_TIMEOUT_S="1.5",
        SPEAKING_API_MAX_CONNECTIONS_PER_CLIENT="40",
    )
    yield running
    await stop_api(running)


async def _open(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(api.base)
    return await asyncio.open_connection(url.hostname, url.port)


async def _closed_within(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """What the server sent before it closed the connection (TimeoutError if it did not)."""
    async with asyncio.timeout(within_s):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    """Send ``data`` a byte at a time until the server closes the connection."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)  # the pace of the attack, not a synchronisation


async def test_slow_headers_and_slow_bodies_are_cut_off_and_block_nobody(
    strict_api: Api,
) -> None:
    """Twenty clients send their request headers a byte every 0.3 s, ten more send a
    body that way: every one is closed within its bound plus a second (a slow body gets
    408 saying so), while a normal client's requests are answered throughout."""
    slow_head = b"GET /v1.0/speakings HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
    body_head = (
        f"POST /v1.0/speakings?token={strict_api.key} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 300\r\n\r\n"
    ).encode()
    headers = [await _open(strict_api) for _ in range(20)]
    bodies = [await _open(strict_api) for _ in range(10)]
    for _, writer in bodies:
        writer.write(body_head)
    trickles = [asyncio.create_task(_trickle(w, slow_head, 0.3)) for _, w in headers] + [
        asyncio.create_task(_trickle(w, b"{" + b" " * 299, 0.3)) for _, w in bodies
    ]
    try:
        cut = asyncio.gather(
            *(_closed_within(r, 1.5 + 1.0) for r, _ in headers),
            *(_closed_within(r, 1.5 + 1.0) for r, _ in bodies),
        )
        answered = [(await strict_api.call("GET", "/v1.0/speakings"))[0] for _ in range(5)]
        said = await cut
        assert answered == [200] * 5
        assert all(reply == b"" for reply in said[:20]), said[:20]  # no response: cut
        for reply in said[20:]:
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            assert b"did not arrive within 1.5 s" in reply, reply
    finally:
        for task in trickles:
            task.cancel()
        await asyncio.gather(*trickles, return_exceptions=True)
        for _, writer in headers + bodies:
            writer.close()


async def test_connections_per_client_address_are_bounded(strict_api: Api) -> None:
    """40 connections from one address are taken; the 41st is answered 503 with the
    bound and closed at once; once some close, a new one is served."""
    held = [await _open(strict_api) for _ in range(40)]
    try:
        reader, writer = await _open(strict_api)
        refused = await _closed_within(reader, 2.0)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"too many connections from your address (at most 40)" in refused
    finally:
        for _, w in held:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()

    async def served() -> bool:
        return (await strict_api.call("GET", "/v1.0/speakings"))[0] == 200

    async with asyncio.timeout(5):  # the server sees the closes a moment later
        while not await served():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _keys_cli(*args: str) -> str:
    """``speaking-api <args>`` against the suite's Redis; its standard output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.api.main",
        *args,
        env={**os.environ, "SPEAKING_REDIS_URL": REDIS_URL},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, err
    return out.decode()


async def test_a_key_is_listed_and_revoked_by_its_id_without_the_key(api: Api) -> None:
    """An operator who lost a key revokes it by the id list-keys shows (the key itself
    appears nowhere in the listing); the key is refused from then on (401)."""
    customer = f"cust-lost-{uuid.uuid4().hex[:6]}"
    key = (await _keys_cli("add-key", "--customer", customer)).strip()
    listing = await _keys_cli("list-keys")
    assert key not in listing
    ids = [line.split()[0] for line in listing.splitlines() if line.split()[1:] == [customer]]
    assert len(ids) == 1 and len(ids[0]) == 12, listing
    assert (
        await _keys_cli("revoke-key", "--id", ids[0])
    ).strip() == f"revoked (customer {customer})"
    assert customer not in await _keys_cli("list-keys")
    status, body = await api.call("GET", "/v1.0/speakings", key=key)
    assert status == 401, body


async def test_metrics_can_be_protected_and_moved_off_the_public_port(
    redis: Redis, tmp_path: Path
) -> None:
    """With a metrics token, /metrics answers 401 without it and the Prometheus text with
    it; with a metrics address, the public port has no /metrics (404) and the address
    serves it (token still required). The token appears in no log line."""
    token = uuid.uuid4().hex
    metrics_port = free_port()
    running = await start_api(
        redis,
        tmp_path / "metrics-api.log",
        SPEAKING_API_METRICS_TOKEN=token,
        SPEAKING_API_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
    )
    try:
        assert (await running.call("GET", "/metrics"))[0] == 404
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            async with http.get(url) as resp:
                assert resp.status == 401
            async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
                assert "speaking_api_requests_total" in await resp.text()
    finally:
        await stop_api(running)
    assert not any(token in line for line in running.process.lines)
