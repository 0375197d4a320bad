"""The public /v1.0/speakings API on a live stack: API process + Redis + worker +
Asterisk + a SIPp call. Replays the seed document's tutorial, then its errors."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import ARI_AUTH, ARI_URL
from tests.e2e.api_fixtures import Api, start_api, stop_api
from tests.e2e.conftest import CallFactory
from tests.telephony.analysis import count_loud
from tests.telephony.ari import Ari, AriEvents
from tests.telephony.sipp import TwoLegCall

pytestmark = pytest.mark.e2e

NEVER = "9999-01-01 00:00:00.000000"
SPEAKING_FIELDS = {
    "id",
    "customer_id",
    "reference_type",
    "reference_id",
    "language",
    "provider",
    "voice_id",
    "direction",
    "status",
    "tm_create",
    "tm_update",
    "tm_delete",
}


async def sse_until(api: Api, speaking_id: str, wanted: str, **match: str) -> dict[str, Any]:
    """Follow the session's Server-Sent Events until an event ``wanted`` (with ``match``)."""
    import json

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{api.base}/v1.0/speakings/{speaking_id}/events", params={"token": api.key}
        ) as resp,
    ):
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        event: dict[str, str] = {}
        async with asyncio.timeout(30):
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = {"event": line[7:]}
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event.get("event") == wanted and all(
                        data.get(k) == v for k, v in match.items()
                    ):
                        return dict(data)
    raise AssertionError(f"stream ended without {wanted}")


async def post_create(api: Api, reference_id: str, **extra: str) -> tuple[int, Any]:
    """POST /v1.0/speakings for a call, as the tutorial does."""
    return await api.call(
        "POST",
        "/v1.0/speakings",
        json={"reference_type": "call", "reference_id": reference_id, "language": "en-US", **extra},
    )


async def create(api: Api, c: TwoLegCall, **extra: str) -> dict[str, Any]:
    status, body = await post_create(api, c.caller_channel_id, **{"direction": "both", **extra})
    assert status == 201, body
    return dict(body)


async def wait_active(api: Api, speaking_id: str) -> dict[str, Any]:
    await sse_until(api, speaking_id, "speaking_started")
    status, body = await api.call("GET", f"/v1.0/speakings/{speaking_id}")
    assert status == 200 and body["status"] == "active", body
    return dict(body)


async def test_tutorial_end_to_end(api: Api, call: CallFactory) -> None:
    """Create, poll, say, flush, stop, delete exactly as the document's tutorial does;
    the caller really hears the text."""
    async with call() as c:
        created = await create(api, c)
        assert set(created) == SPEAKING_FIELDS
        assert created["status"] == "initiating" and created["direction"] == "both"
        assert created["provider"] == "offline"  # this deployment's default (no ElevenLabs key)
        assert created["voice_id"] == "" and created["tm_delete"] == NEVER
        assert created["customer_id"] == "cust-1" and created["tm_update"] == created["tm_create"]
        speaking_id = created["id"]
        await wait_active(api, speaking_id)

        status, said = await api.call(
            "POST",
            f"/v1.0/speakings/{speaking_id}/say",
            json={"text": "Hello! This is your AI agent speaking. How can I help you today?"},
        )
        assert status == 200, said
        assert {k: said[k] for k in ("id", "status", "reference_type", "reference_id")} == {
            "id": speaking_id,
            "status": "active",
            "reference_type": "call",
            "reference_id": c.caller_channel_id,
        }
        await sse_until(api, speaking_id, "segment_finished", segment_id=said["segment_id"])

        status, flushed = await api.call("POST", f"/v1.0/speakings/{speaking_id}/flush")
        assert status == 200 and flushed["status"] == "active", flushed

        status, listed = await api.call("GET", "/v1.0/speakings", json=None)
        assert status == 200 and speaking_id in [s["id"] for s in listed["result"]]

        status, stopped = await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop")
        assert status == 200 and stopped["status"] == "stopped" and set(stopped) == SPEAKING_FIELDS
        status, again = await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop")
        assert status == 200 and again["status"] == "stopped"  # stop is idempotent

        status, deleted = await api.call("DELETE", f"/v1.0/speakings/{speaking_id}")
        assert status == 200 and deleted["tm_delete"] != NEVER
        assert (await api.call("GET", f"/v1.0/speakings/{speaking_id}"))[0] == 404
        status, listed = await api.call("GET", "/v1.0/speakings")
        assert speaking_id not in [s["id"] for s in listed["result"]]
    assert count_loud(c.received("caller")) > 50
    assert count_loud(c.received("callee")) > 50


@pytest.mark.parametrize("auth", ["token", "accesskey", "bearer"])
async def test_every_documented_way_to_authenticate(api: Api, auth: str) -> None:
    status, body = await api.call("GET", "/v1.0/speakings", auth=auth)
    assert status == 200 and "result" in body
    status, body = await api.call("GET", "/v1.0/speakings", auth=auth, key="wrong")
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    assert (await api.call("GET", "/v1.0/speakings", auth="none"))[0] == 401


async def test_say_while_initiating_or_stopped_conflicts(api: Api, call: CallFactory) -> None:
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        await wait_active(api, speaking_id)
        status, body = await post_create(api, c.caller_channel_id)
        assert status == 409 and body["error"]["details"]["existing_speaking_id"] == speaking_id
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200
        status, body = await api.call(
            "POST", f"/v1.0/speakings/{speaking_id}/say", json={"text": "hi"}
        )
        assert status == 409 and "stopped" in body["error"]["message"]


async def test_two_concurrent_creates_exactly_one_wins(api: Api, call: CallFactory) -> None:
    async with call() as c:
        request = {
            "reference_type": "call",
            "reference_id": c.caller_channel_id,
            "language": "en-US",
        }
        results = await asyncio.gather(
            *(api.call("POST", "/v1.0/speakings", json=request) for _ in range(4))
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [201, 409, 409, 409], results
        winner = next(body for status, body in results if status == 201)
        await wait_active(api, winner["id"])
        assert (await api.call("POST", f"/v1.0/speakings/{winner['id']}/stop"))[0] == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"language": "en-US", "reference_id": "x"}, "reference_type is missing"),
        ({"reference_type": "call", "language": "en-US"}, "reference_id is missing"),
        (
            {"reference_type": "queue", "reference_id": "x", "language": "en-US"},
            "not one of call, confbridge",
        ),
        (
            {"reference_type": "call", "reference_id": "x", "language": "english"},
            "not a valid BCP 47 tag",
        ),
        (
            {
                "reference_type": "call",
                "reference_id": "x",
                "language": "en-US",
                "provider": "azure",
            },
            "provider 'azure' is not one of",
        ),
        (
            {
                "reference_type": "call",
                "reference_id": "x",
                "language": "en-US",
                "provider": "elevenlabs",
            },
            "provider elevenlabs is not configured on this deployment",
        ),
        (
            {"reference_type": "call", "reference_id": "x", "language": "en-US", "direction": "up"},
            "direction 'up' is not one of in, out, both",
        ),
        (
            {"reference_type": "call", "reference_id": 5, "language": "en-US"},
            "reference_id must be a string",
        ),
    ],
)
async def test_bad_creates_are_400_with_what_is_allowed(
    api: Api, body: dict[str, Any], fragment: str
) -> None:
    status, reply = await api.call("POST", "/v1.0/speakings", json=body)
    assert status == 400, reply
    assert fragment in reply["error"]["message"]


async def test_malformed_json_and_missing_resources(api: Api) -> None:
    status, body = await api.call("POST", "/v1.0/speakings", data=b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = await api.call("POST", "/v1.0/speakings", data=b"[1, 2]")
    assert status == 400 and "JSON object" in body["error"]["message"]
    status, body = await api.call(
        "POST",
        "/v1.0/speakings",
        json={"reference_type": "call", "reference_id": "no-such-call", "language": "en-US"},
    )
    assert status == 404 and "call no-such-call not found" in body["error"]["message"]
    for method, path in (("GET", ""), ("POST", "/stop"), ("POST", "/flush"), ("DELETE", "")):
        status, body = await api.call(
            method, f"/v1.0/speakings/0b1e2c3d-0000-4000-8000-000000000000{path}"
        )
        assert status == 404 and body["error"]["code"] == "not_found"
    assert (await api.call("GET", "/v1.0/speakings", auth="token", key=api.key))[0] == 200
    status, body = await api.call("GET", "/v1.0/speakings?page_size=1000")
    assert status == 400 and "page_size" in body["error"]["message"]


async def test_say_text_limits_count_characters(api: Api, call: CallFactory) -> None:
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        await wait_active(api, speaking_id)
        path = f"/v1.0/speakings/{speaking_id}/say"
        status, body = await api.call("POST", path, json={"text": "가" * 5001})
        assert status == 400 and "5001 characters; at most 5000" in body["error"]["message"]
        assert (await api.call("POST", path, json={"text": ""}))[0] == 400
        assert (await api.call("POST", path, json={"text": 7}))[0] == 400
        assert (await api.call("POST", path, json={"text": "가" * 5000}))[0] == 200
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200


async def test_customers_are_isolated(api: Api, call: CallFactory) -> None:
    """Another customer's session is indistinguishable from an unknown one, and a call
    owned by another customer cannot be attached to."""
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        await wait_active(api, speaking_id)
        for method, path, body in (
            ("GET", f"/v1.0/speakings/{speaking_id}", None),
            ("POST", f"/v1.0/speakings/{speaking_id}/say", {"text": "intrusion"}),
            ("POST", f"/v1.0/speakings/{speaking_id}/stop", None),
            ("DELETE", f"/v1.0/speakings/{speaking_id}", None),
        ):
            status, reply = await api.call(method, path, json=body, key=api.other_key)
            assert status == 404, (method, path, reply)
        status, listed = await api.call("GET", "/v1.0/speakings", key=api.other_key)
        assert speaking_id not in [s["id"] for s in listed["result"]]
        assert (await api.call("GET", f"/v1.0/speakings/{speaking_id}"))[1]["status"] == "active"
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200
    async with call(customer_id="cust-2") as theirs:
        status, body = await post_create(api, theirs.caller_channel_id)
        assert status == 404, body


async def test_list_pages_newest_first_and_filters(api: Api, call: CallFactory) -> None:
    created = []
    async with call() as c:
        for _ in range(3):
            speaking = await create(api, c)
            created.append(speaking["id"])
            await wait_active(api, speaking["id"])
            assert (await api.call("POST", f"/v1.0/speakings/{speaking['id']}/stop"))[0] == 200
    seen: list[str] = []
    token = ""
    while True:
        status, page = await api.call(
            "GET",
            f"/v1.0/speakings?page_size=2&reference_id={c.caller_channel_id}"
            + (f"&page_token={token}" if token else ""),
        )
        assert status == 200 and len(page["result"]) <= 2
        seen += [s["id"] for s in page["result"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(created))
    status, page = await api.call(
        "GET", f"/v1.0/speakings?status=active&reference_id={c.caller_channel_id}"
    )
    assert page["result"] == []
    assert (await api.call("GET", "/v1.0/speakings?page_token=%%%"))[0] == 400


async def test_health_metrics_and_openapi_are_served_without_a_key(api: Api) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api.base}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["workers"] >= 1
        async with http.get(f"{api.base}/metrics") as resp:
            text = await resp.text()
            assert "# TYPE speaking_api_requests_total counter" in text
            assert 'status="401"' in text or 'status="200"' in text
        async with http.get(f"{api.base}/v1.0/openapi.json") as resp:
            document = await resp.json()
            assert document["openapi"].startswith("3.") and "/v1.0/speakings" in document["paths"]


async def test_unanswered_call_of_the_customer_is_409(
    api: Api, ari: Ari, harness_events: AriEvents
) -> None:
    """A call of the customer that rings and is not answered yet: 409, with its state."""
    channel_id = f"ringing-{uuid.uuid4().hex[:8]}"
    try:
        # Originated with the owner variable already set (ARI sets variables on a channel
        # outside Stasis only at origination).
        async with (
            aiohttp.ClientSession(
                headers={"Authorization": aiohttp.encode_basic_auth(*ARI_AUTH)}
            ) as http,
            http.post(
                f"{ARI_URL}/channels",
                params={
                    "endpoint": "Local/ring@from-caller",
                    "app": harness_events.app,  # the app the call would enter if answered
                    "channelId": channel_id,
                },
                json={"variables": {"SPEAKING_CUSTOMER_ID": "cust-1"}},
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
        status, body = await post_create(api, channel_id)
        assert status == 409, body
        assert "not answered" in body["error"]["message"] and body["error"]["details"]["call_state"]
    finally:
        await ari.hangup(channel_id)


async def test_delete_of_a_live_session_stops_it_first(api: Api, call: CallFactory) -> None:
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        await wait_active(api, speaking_id)
        status, deleted = await api.call("DELETE", f"/v1.0/speakings/{speaking_id}")
        assert status == 200 and deleted["status"] == "stopped" and deleted["tm_delete"] != NEVER
        assert (await api.call("GET", f"/v1.0/speakings/{speaking_id}"))[0] == 404
        assert (await api.call("DELETE", f"/v1.0/speakings/{speaking_id}"))[0] == 404


async def test_single_tenant_deployment_can_switch_the_owner_check_off(
    api: Api, redis: Redis, call: CallFactory, tmp_path: Path
) -> None:
    open_api = await start_api(redis, tmp_path / "api.log", SPEAKING_API_TENANCY_CHECK="0")
    try:
        async with call(customer_id="someone-else") as c:
            status, body = await post_create(open_api, c.caller_channel_id)
            assert status == 201, body
            await wait_active(open_api, body["id"])
            assert (await open_api.call("POST", f"/v1.0/speakings/{body['id']}/stop"))[0] == 200
    finally:
        await stop_api(open_api)


async def test_deeply_nested_json_is_400_not_500(api: Api) -> None:
    body = ("[" * 100_000 + "]" * 100_000).encode()
    status, problem = await api.call("POST", "/v1.0/speakings", data=body)
    assert status == 400 and "nested too deeply" in problem["error"]["message"], problem


async def test_a_key_needs_a_customer_id(tmp_path: Path) -> None:
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.api.main",
        "add-key",
        "--customer",
        "",
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 2 and b"is not a customer id" in err


async def test_a_retried_request_with_an_idempotency_key_is_applied_once(
    api: Api, call: CallFactory
) -> None:
    async with call() as c:
        headers = {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
        body = {"reference_type": "call", "reference_id": c.caller_channel_id, "language": "en-US"}
        first = await api.call("POST", "/v1.0/speakings", json=body, headers=headers)
        again = await api.call("POST", "/v1.0/speakings", json=body, headers=headers)
        assert first[0] == again[0] == 201 and first[1]["id"] == again[1]["id"]
        speaking_id = first[1]["id"]
        await wait_active(api, speaking_id)
        say = {"Idempotency-Key": "say-1"}
        path = f"/v1.0/speakings/{speaking_id}/say"
        one = await api.call("POST", path, json={"text": "Only once."}, headers=say)
        two = await api.call("POST", path, json={"text": "Only once."}, headers=say)
        assert one == two and one[0] == 200
        assert (await api.call("POST", path, headers={"Idempotency-Key": "bad key!"}))[0] == 400
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200


async def test_the_catalog_forgets_sessions_whose_record_expired(
    api: Api, redis: Redis, call: CallFactory
) -> None:
    async with call() as c:
        speaking_id = (await create(api, c))["id"]
        await wait_active(api, speaking_id)
        assert (await api.call("POST", f"/v1.0/speakings/{speaking_id}/stop"))[0] == 200
    catalog = "speaking:customer:cust-1:sessions"
    assert await redis.zscore(catalog, speaking_id) is not None
    await redis.delete(f"speaking:session:{speaking_id}")  # as its 7-day TTL would
    status, page = await api.call("GET", "/v1.0/speakings?page_size=100")
    assert status == 200 and speaking_id not in [s["id"] for s in page["result"]]
    assert await redis.zscore(catalog, speaking_id) is None
    assert await redis.ttl(catalog) > 0  # the catalog itself expires with its sessions
