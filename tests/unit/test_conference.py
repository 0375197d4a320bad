"""Pure core of conferences (worker/conference.py, worker/resources.py): what a bridge
snapshot makes of a reference, the refusals, when a conference is over, the owner and
codec read from participants, and the conference stop reason in the session protocol."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.unit.test_session_protocol import create, feed, finish_teardown, received
from worker.conference import (
    VACANCY_GRACE_S,
    Conference,
    ConferenceKind,
    Vacancy,
    common_owner,
    event_ends,
    from_bridge,
    kind_of,
    native_formats,
    others_in_room,
    refusal,
)
from worker.errors import ErrorCode
from worker.events import EventType
from worker.model import ReferenceType
from worker.resources import is_ours, parse_resource
from worker.session import SessionProtocol
from worker.session_messages import CallChecked, ChannelGone, LockClaimed, Publish, SetupDone

OURS = "speaking-0123abcd-6b1e9c2e-1f5e-4a51-9a0e-2d2f2e2f2a2b"


def bridge(**fields: Any) -> dict[str, Any]:
    return {"id": "room-1", "name": "", "bridge_class": "stasis", "bridge_type": "mixing"} | fields


def test_a_stasis_mixing_bridge_is_an_ari_conference_and_a_confbridge_room_its_own_kind() -> None:
    assert kind_of(bridge()) is ConferenceKind.ARI
    assert kind_of(bridge(creator="ConfBridge", bridge_class="base")) is ConferenceKind.CONFBRIDGE
    assert kind_of(bridge(bridge_type="holding")) is None
    assert kind_of(bridge(bridge_class="base")) is None  # e.g. a two-party Dial bridge


def test_participants_are_the_channels_that_are_not_a_workers() -> None:
    conf = from_bridge(bridge(channels=["p1", f"{OURS}-media", "p2", f"{OURS}-local2"]))
    assert conf.participants == ("p1", "p2")
    assert from_bridge(bridge(id=OURS, channels=["p1"])).kind is None  # our own bridge


def test_one_lock_per_conference_whichever_way_it_is_named() -> None:
    room = from_bridge(bridge(id="b-77", name="sales", creator="ConfBridge", channels=["p"]))
    assert room.lock_id == "sales"  # by bridge id or by name: the same room
    assert from_bridge(bridge(id="b-78", name="sales", channels=["p"])).lock_id == "b-78"


@pytest.mark.parametrize(
    ("conf", "code", "fragment"),
    [
        (None, ErrorCode.NOT_FOUND, "conference ref does not exist here"),
        (Conference(None, "ref", "", ("p",)), ErrorCode.CONFLICT, "ref is not a conference"),
        (
            Conference(ConferenceKind.CONFBRIDGE, "b", "a,b", ("p",)),
            ErrorCode.CONFLICT,
            "its name must be 1 to 80 letters, digits or . _ + -",
        ),
        (
            Conference(ConferenceKind.ARI, "ref", "", ()),
            ErrorCode.CONFLICT,
            "at least one participant must have joined",
        ),
    ],
)
def test_refusals_say_what_is_wrong(
    conf: Conference | None, code: ErrorCode, fragment: str
) -> None:
    error = refusal(conf, "ref")
    assert error is not None and error.code is code
    assert fragment in error.message


def test_a_conference_with_a_participant_is_accepted() -> None:
    assert refusal(Conference(ConferenceKind.ARI, "ref", "", ("p",)), "ref") is None
    assert refusal(Conference(ConferenceKind.CONFBRIDGE, "b", "sales-1", ("p",)), "b") is None


def test_a_conference_ends_at_once_only_when_its_bridge_is_destroyed() -> None:
    assert event_ends({"type": "BridgeDestroyed", "bridge": bridge(channels=["p1"])})
    # The last participant leaving starts a vacancy; the poll times it (Vacancy).
    left = {"type": "ChannelLeftBridge", "bridge": bridge(channels=[f"{OURS}-media"])}
    assert not event_ends(left)
    assert not event_ends({"type": "ChannelEnteredBridge", "bridge": bridge()})


def test_a_conference_gone_has_ended_at_the_first_look() -> None:
    assert Vacancy().observe(0.0, None)


def test_an_empty_conference_ends_after_the_grace_period_not_before() -> None:
    vacancy = Vacancy()
    looks = [(0.0, 1), (1.0, 0), (2.0, 0), (2.99, 0)]
    assert [vacancy.observe(t, n) for t, n in looks] == [False] * 4
    assert vacancy.observe(1.0 + VACANCY_GRACE_S, 0)


def test_a_participant_stepping_out_and_back_restarts_the_grace_period() -> None:
    vacancy = Vacancy(grace_s=2.0)
    assert not vacancy.observe(0.0, 0)
    assert not vacancy.observe(1.5, 1)  # back in: the vacancy is over
    assert not vacancy.observe(2.5, 0)
    assert not vacancy.observe(4.0, 0)
    assert vacancy.observe(4.5, 0)


def test_the_rooms_others_are_counted_by_name_without_our_local_channel() -> None:
    ours = "Local/sales-1@speaking-confbridge-"
    assert others_in_room(None, ours) == 0
    assert others_in_room("", ours) == 0
    assert others_in_room(f"{ours}0000001a;2", ours) == 0
    assert others_in_room(f"PJSIP/caller-00000004,{ours}0000001a;2", ours) == 1
    # Before our ;2 got through the dialplan the room lists only the participant: one
    # other, not "only ours" (the spurious conference_ended of docs/media.md).
    assert others_in_room("PJSIP/caller-00000004", ours) == 1
    assert others_in_room("PJSIP/a-1,PJSIP/b-2", ours) == 2


def test_the_owner_is_the_one_owner_all_participants_carry() -> None:
    assert common_owner(["cust-1", "cust-1"]) == "cust-1"
    assert common_owner(["cust-1", "", "cust-1"]) == ""  # an untagged participant: nobody's
    assert common_owner(["cust-1", "cust-2"]) == ""  # ambiguous: nobody's conference
    assert common_owner([""]) == ""
    assert common_owner([]) == ""


def test_a_conference_is_wideband_if_any_participant_is() -> None:
    assert native_formats(["(ulaw)", "(slin16|ulaw)"]) == "(ulaw|slin16|ulaw)"
    assert native_formats([]) == "()"


@pytest.mark.parametrize("suffix", ["", "-snoop", "-media", "-local", "-local2"])
def test_every_resource_of_a_session_is_recognised_as_ours(suffix: str) -> None:
    parsed = parse_resource(OURS + suffix)
    assert parsed == ("0123abcd", OURS.removeprefix("speaking-0123abcd-"))
    assert is_ours(OURS + suffix)
    assert not is_ours("room-1") and not is_ours("speaking-nothex-1")


def test_a_conference_that_ends_stops_its_session_with_reason_conference_ended() -> None:
    conference = replace(create(), reference_type=ReferenceType.CONFBRIDGE, reference_id="sales")
    protocol = SessionProtocol.for_create(conference)
    feed(protocol, received(conference), CallChecked(), LockClaimed(), SetupDone("slin16", 9.0))
    feed(protocol, ChannelGone("bridge:sales"))
    (stopped,) = [a for a in finish_teardown(protocol) if isinstance(a, Publish)]
    assert stopped.kind is EventType.SPEAKING_STOPPED
    assert stopped.data["reason"] == "conference_ended"
