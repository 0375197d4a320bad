"""The channel directory: what ARI's events say exists, and when it cannot say."""

from __future__ import annotations

from typing import Any

from worker.channel_directory import ChannelDirectory


def channel(channel_id: str, state: str = "Up", owner: str = "") -> dict[str, Any]:
    return {
        "id": channel_id,
        "name": f"PJSIP/{channel_id}",
        "state": state,
        "caller": {"name": "", "number": "100"},
        "channelvars": {"SPEAKING_CUSTOMER_ID": owner},
    }


def event(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "channel": body, "application": "speaking"}


def test_unknown_until_seeded_and_for_another_connection() -> None:
    directory = ChannelDirectory()
    assert directory.lookup("c1", 0) == (False, None)
    directory.apply(event("ChannelCreated", channel("c1")))  # before a seed: ignored
    directory.seed([], epoch=0)
    assert directory.lookup("c1", 0) == (True, None)
    assert directory.lookup("c1", 1) == (False, None)  # a reconnect not yet seeded


def test_events_after_the_seed_win_in_order() -> None:
    directory = ChannelDirectory()
    directory.seed([channel("c1", "Ring")], epoch=3)
    directory.apply(event("ChannelStateChange", channel("c1", "Up")))
    directory.apply(event("ChannelVarset", channel("c1", "Up", owner="cust-1")))
    directory.apply(event("ChannelCreated", channel("c2", "Down")))
    known, found = directory.lookup("c1", 3)
    assert known and found is not None
    assert found["state"] == "Up" and found["channelvars"]["SPEAKING_CUSTOMER_ID"] == "cust-1"
    assert "caller" not in found  # only what lookups read is kept
    assert directory.lookup("c2", 3)[1] is not None and len(directory) == 2
    directory.apply(event("ChannelDestroyed", channel("c1")))
    assert directory.lookup("c1", 3) == (True, None)


def test_a_dropped_connection_forgets_everything() -> None:
    directory = ChannelDirectory()
    directory.seed([channel("c1")], epoch=0)
    directory.forget()
    assert directory.lookup("c1", 0) == (False, None) and len(directory) == 0
    directory.apply({"type": "BridgeCreated", "bridge": {"id": "b1"}})  # no channel: ignored
