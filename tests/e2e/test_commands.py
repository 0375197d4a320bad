"""The Redis command contract against a real worker: conflicts, bad input, replays,
delete, and what a refused command leaves behind (nothing changed)."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.e2e.conftest import CallFactory, create_fields
from tests.e2e.processes import WorkerProcess
from tests.e2e.test_call_path import HELLO, say, start_session, stop
from tests.telephony.ari import Ari, AriEvents
from worker.client import SpeakingClient

pytestmark = pytest.mark.e2e


async def test_second_create_on_a_call_names_the_existing_session(
    client: SpeakingClient, call: CallFactory
) -> None:
    async with call() as c:
        first = await start_session(client, c)
        second = str(uuid.uuid4())
        reply = await client.send("create", second, **create_fields(c))
        assert not reply["ok"]
        assert reply["error"]["code"] == "conflict"
        assert reply["error"]["details"]["existing_speaking_id"] == first
        assert first in reply["error"]["message"]
        assert await client.session(second) == {}  # the refused create left nothing behind
        assert (await client.session(first))["status"] == "active"
        await stop(client, first)
        # Once the first is stopped the call is free again.
        third = await start_session(client, c)
        await stop(client, third)


async def test_create_refused_for_missing_and_unanswered_calls(
    client: SpeakingClient, call: CallFactory, ari: Ari, harness_events: AriEvents
) -> None:
    async with call() as c:
        fields = create_fields(c)
    missing = await client.send(
        "create", str(uuid.uuid4()), **(fields | {"reference_id": "no-such-call"})
    )
    assert missing["error"]["code"] == "not_found"
    assert "no-such-call does not exist" in missing["error"]["message"]

    # A call that rings and is never answered (dialplan extension "ring"). Not created with
    # /channels/create: hanging up such a never-dialled Local channel deadlocked Asterisk
    # 22.10's ARI websockets here (measured; see docs/media.md).
    # The harness app is the Stasis app the call would enter if it were answered.
    channel_id = f"notup-{uuid.uuid4().hex[:8]}"
    await ari.request(
        "POST",
        "/channels",
        endpoint="Local/ring@from-caller",
        app=harness_events.app,
        channelId=channel_id,
    )
    try:
        reply = await client.send(
            "create", str(uuid.uuid4()), **(fields | {"reference_id": channel_id})
        )
        assert reply["error"]["code"] == "conflict"
        assert "is not answered (state " in reply["error"]["message"]
        assert reply["error"]["details"]["call_state"] in ("Down", "Ring", "Ringing")
    finally:
        await ari.hangup(channel_id)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"provider": ""}, "provider elevenlabs is not configured on this deployment"),
        ({"provider": "aws"}, "configured providers: offline"),
        ({"language": "klingon"}, "not a valid BCP 47 tag"),
        ({"language": "en-US", "voice_id": "espeak:nope"}, "espeak has no voice 'nope'"),
        ({"language": "xx-YY", "voice_id": "espeak"}, "no voice for language 'xx-YY'"),
        ({"direction": "sideways"}, "direction 'sideways' is not one of in, out, both"),
        (
            {"reference_type": "confbridge", "direction": "in"},
            "conferences accept only both",
        ),
    ],
)
async def test_bad_create_is_refused_with_what_is_allowed(
    client: SpeakingClient, call: CallFactory, change: dict[str, str], fragment: str
) -> None:
    async with call() as c:
        speaking_id = str(uuid.uuid4())
        reply = await client.send("create", speaking_id, **create_fields(c, **change))
        assert not reply["ok"] and reply["error"]["code"] == "invalid_argument", reply
        assert fragment in reply["error"]["message"]
        assert await client.session(speaking_id) == {}


async def test_refused_commands_leave_the_session_as_it_was(
    client: SpeakingClient, call: CallFactory
) -> None:
    async with call() as c:
        speaking_id = await start_session(client, c)
        segment = await say(client, speaking_id, HELLO)
        await client.wait_event(speaking_id, "segment_started", segment_id=segment)
        before = await client.session(speaking_id)

        too_long = await client.send("say", speaking_id, text="가" * 5001)
        assert (
            too_long["error"]["message"]
            == "text has 5001 characters; at most 5000 characters are allowed"
        )
        empty = await client.send("say", speaking_id, text="  ")
        assert "text is empty" in empty["error"]["message"]
        unknown = await client.send("pause", speaking_id)
        assert unknown["error"]["allowed"] == ["create", "say", "flush", "stop", "delete", "locate"]

        assert await client.session(speaking_id) == before
        # The segment that was playing is unaffected: it still finishes.
        await client.wait_event(speaking_id, "segment_finished", segment_id=segment)
        # 5,000 Korean characters (15,000 bytes) are within the limit.
        accepted = await client.send("say", speaking_id, text="가" * 5000)
        assert accepted["ok"]
        await stop(client, speaking_id)


async def test_unknown_session_and_malformed_entries(
    client: SpeakingClient, redis: Redis, call: CallFactory
) -> None:
    for kind in ("say", "flush", "stop", "delete"):
        reply = await client.send(kind, f"nope-{uuid.uuid4()}", text="hi")
        assert reply["error"]["code"] == "not_found", reply
    # An entry with no usable command id cannot be answered: it is acknowledged, reported
    # as an event, and the worker carries on.
    newest: Any = await redis.xrevrange(client.keys.events(), count=1)
    last_id = newest[0][0] if newest else b"0"
    await redis.xadd(client.keys.commands(client.worker_id), {"garbage": "1"})
    read: Any = await redis.xread({client.keys.events(): last_id}, block=5000)
    assert read, "no event for the malformed entry"
    kinds = [fields[b"type"] for _, fields in read[0][1]]
    assert b"command_rejected" in kinds
    async with call() as c:
        speaking_id = await start_session(client, c)
        await stop(client, speaking_id)
    pending = await redis.xpending(client.keys.commands(client.worker_id), "speaking-workers")
    assert pending["pending"] == 0  # every entry, good or bad, was acknowledged


async def test_replayed_commands_change_nothing(client: SpeakingClient, call: CallFactory) -> None:
    async with call() as c:
        speaking_id = await start_session(client, c)
        command_id = str(uuid.uuid4())
        first = await client.send("say", speaking_id, text=HELLO, command_id=command_id)
        again = await client.send("say", speaking_id, text=HELLO, command_id=command_id)
        assert first == again
        await client.wait_event(speaking_id, "segment_finished", segment_id=command_id)
        stop_id = str(uuid.uuid4())
        stopped = await client.send("stop", speaking_id, command_id=stop_id)
        assert stopped == await client.send("stop", speaking_id, command_id=stop_id)
    kinds = [f["type"] for _, f in await client.events(speaking_id)]
    assert kinds.count("segment_started") == 1
    assert kinds.count("speaking_stopped") == 1


async def test_stop_is_idempotent_and_delete_hides_the_session(
    client: SpeakingClient, call: CallFactory
) -> None:
    async with call() as c:
        speaking_id = await start_session(client, c)
        await stop(client, speaking_id)
        await stop(client, speaking_id)  # a new command id, same outcome
        deleted = await client.send("delete", speaking_id)
        assert deleted["ok"] and deleted["speaking"]["tm_delete"] != "9999-01-01 00:00:00.000000"
        assert (await client.session(speaking_id))["tm_delete"] == deleted["speaking"]["tm_delete"]
        for kind in ("say", "stop", "delete"):
            reply = await client.send(kind, speaking_id, text="hi")
            assert reply["error"]["code"] == "not_found"
        # Delete of a live session stops it first.
        live = await start_session(client, c)
        reply = await client.send("delete", live)
        assert reply["speaking"]["status"] == "stopped"
        stopped = await client.wait_event(live, "speaking_stopped")
        assert stopped["reason"] == "delete"


async def test_metrics_are_served_in_prometheus_format(
    worker: WorkerProcess, client: SpeakingClient
) -> None:
    assert (await client.send("stop", f"nope-{uuid.uuid4()}"))["error"]["code"] == "not_found"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"http://127.0.0.1:{worker.metrics_port}/healthz") as resp:
            health = await resp.json()
    assert "# TYPE speaking_commands_total counter" in text
    assert 'speaking_commands_total{outcome="not_found"}' in text
    assert "# TYPE speaking_setup_seconds histogram" in text
    assert "# TYPE speaking_frames_sent_total counter" in text
    assert "speaking_pacer_ticks_total " in text
    assert health["ready"] and health["ari"]
