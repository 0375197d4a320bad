"""The session protocol (worker/session.py), driven from tables with no network: every
command in every phase, replays, hangup and stop during setup, a failure at each
teardown step, shutdown in each phase, bounds, and the rules for stored sessions."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest

from worker.commands import Create, Delete, Flush, Say, Stop
from worker.direction import Direction
from worker.errors import CommandError, ErrorCode
from worker.events import EventType
from worker.model import NEVER, Provider, ReferenceType, Status, StopReason
from worker.say_queue import Limits
from worker.session import Phase, ProtocolViolation, SessionProtocol, retry_delay
from worker.session_messages import (
    TEARDOWN,
    Action,
    BuildMedia,
    CallChecked,
    ChannelGone,
    CheckCall,
    ClaimLock,
    Enqueue,
    Flushed,
    FlushPlayback,
    Input,
    InternalError,
    LockClaimed,
    Persist,
    Publish,
    Received,
    Reply,
    SegmentEvent,
    SessionCommand,
    SetupDone,
    SetupFailed,
    Shutdown,
    StartPlayback,
    Step,
    StepDone,
    StepFailed,
    TearDown,
)

SID = "s1"
_ids = itertools.count()


def clock() -> str:
    return f"2026-12-01 10:00:00.{next(_ids):06d}"


def create(command_id: str = "c-create") -> Create:
    return Create(
        command_id,
        SID,
        customer_id="cust",
        reference_type=ReferenceType.CALL,
        reference_id="call-1",
        language="en-US",
        provider=Provider.OFFLINE,
        voice_id="",
        direction=Direction.BOTH,
    )


def command(kind: str, command_id: str | None = None, text: str = "Hello.") -> SessionCommand:
    cid = command_id or f"c-{kind}-{next(_ids)}"
    match kind:
        case "create":
            return create(cid)
        case "say":
            return Say(cid, SID, text)
        case "flush":
            return Flush(cid, SID)
        case "stop":
            return Stop(cid, SID)
        case _:
            return Delete(cid, SID)


def received(cmd: SessionCommand) -> Received:
    return Received(f"e-{cmd.command_id}", cmd)


def feed(protocol: SessionProtocol, *inputs: Input) -> list[Action]:
    return [action for event in inputs for action in protocol.handle(event)]


def replies(actions: Iterable[Action]) -> list[dict[str, Any]]:
    return [a.body for a in actions if isinstance(a, Reply)]


def new(limits: Limits | None = None) -> SessionProtocol:
    return SessionProtocol.for_create(create(), limits=limits, clock=clock)


def checking() -> SessionProtocol:
    protocol = new()
    assert feed(protocol, received(create())) == [CheckCall()]
    return protocol


def setting_up() -> SessionProtocol:
    protocol = checking()
    actions = feed(protocol, CallChecked(), LockClaimed())
    assert [type(a) for a in actions] == [ClaimLock, Persist, Reply, BuildMedia]
    assert replies(actions)[0]["speaking"]["status"] == "initiating"
    return protocol


def active(limits: Limits | None = None) -> SessionProtocol:
    protocol = new(limits)
    feed(protocol, received(create()), CallChecked(), LockClaimed())
    actions = feed(protocol, SetupDone("ulaw", 9.0))
    assert [type(a) for a in actions] == [StartPlayback, Persist, Publish]
    assert protocol.speaking.status is Status.ACTIVE
    return protocol


def tearing_down() -> SessionProtocol:
    protocol = active()
    feed(protocol, received(command("stop")))
    return protocol


def stopped() -> SessionProtocol:
    protocol = tearing_down()
    feed(protocol, *(StepDone(step) for step in TEARDOWN))
    return protocol


PHASES = {
    Phase.CHECKING: checking,
    Phase.SETTING_UP: setting_up,
    Phase.ACTIVE: active,
    Phase.TEARING_DOWN: tearing_down,
    Phase.STOPPED: stopped,
}


def finish_teardown(protocol: SessionProtocol) -> list[Action]:
    """Complete every teardown step still to do, in order, returning what they asked for."""
    actions: list[Action] = []
    step: Step | None = Step.SILENCE
    while step is not None:
        actions += protocol.handle(StepDone(step))
        step = next((a.step for a in actions[-1:] if isinstance(a, TearDown)), None)
    return actions


# -- the happy path ------------------------------------------------------------------------------


def test_a_session_goes_initiating_active_stopped_and_each_step_is_asked_for() -> None:
    protocol = active()
    said = feed(protocol, received(command("say", "c-say")))
    assert said[0] == Enqueue("c-say", "Hello.") and replies(said)[0]["segment_id"] == "c-say"
    stop = command("stop", "c-stop")
    first = feed(protocol, received(stop))
    assert first == [TearDown(Step.SILENCE, StopReason.STOP, protocol.speaking)]
    assert replies(first) == []  # a stop is answered only once the session is down
    rest = finish_teardown(protocol)
    assert [a.step for a in rest if isinstance(a, TearDown)] == [
        Step.MEDIA,
        Step.RECORD,
        Step.RELEASE,
    ]
    record = next(a for a in rest if isinstance(a, TearDown) and a.step is Step.RECORD)
    assert record.speaking.status is Status.STOPPED
    assert Publish(EventType.SPEAKING_STOPPED, {"reason": "stop"}) in rest
    (answer,) = replies(rest)
    assert answer["command_id"] == "c-stop" and answer["speaking"]["status"] == "stopped"
    assert protocol.phase is Phase.STOPPED and protocol.finished


# -- every command is answered in every phase ----------------------------------------------------


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("kind", ["create", "say", "flush", "stop", "delete"])
def test_every_command_is_accepted_in_every_phase(phase: Phase, kind: str) -> None:
    """No command is ever a protocol violation: each is answered now or at teardown's end."""
    protocol = PHASES[phase]()
    cmd = command(kind)
    actions = feed(protocol, received(cmd))
    if phase in (Phase.TEARING_DOWN, Phase.SETTING_UP) and kind in ("stop", "delete"):
        assert replies(actions) == []
        actions += finish_setup_and_teardown(protocol)
    elif phase is Phase.ACTIVE and kind in ("stop", "delete"):
        actions += finish_teardown(protocol)
    elif phase is Phase.ACTIVE and kind == "flush":
        assert actions == [FlushPlayback(f"e-{cmd.command_id}", cmd.command_id)]
        actions += feed(protocol, Flushed(f"e-{cmd.command_id}", cmd.command_id, ()))
    assert [r["command_id"] for r in replies(actions) if r["command_id"] == cmd.command_id] == [
        cmd.command_id
    ]


def finish_setup_and_teardown(protocol: SessionProtocol) -> list[Action]:
    actions: list[Action] = []
    if protocol.phase is Phase.SETTING_UP:
        actions += feed(protocol, SetupDone("ulaw", 1.0))
    return actions + finish_teardown(protocol)


@pytest.mark.parametrize(
    ("phase", "kind", "code", "fragment"),
    [
        (Phase.CHECKING, "say", "not_found", "not found"),
        (Phase.CHECKING, "create", "conflict", "is being created"),
        (Phase.SETTING_UP, "say", "conflict", "still initiating"),
        (Phase.SETTING_UP, "flush", "conflict", "still initiating"),
        (Phase.TEARING_DOWN, "say", "conflict", "is stopping"),
        (Phase.STOPPED, "say", "conflict", "stopped (stop)"),
        (Phase.STOPPED, "flush", "conflict", "stopped (stop)"),
    ],
)
def test_refusals_say_what_is_wrong(phase: Phase, kind: str, code: str, fragment: str) -> None:
    protocol = PHASES[phase]()
    before = protocol.speaking
    (answer,) = replies(feed(protocol, received(command(kind))))
    assert answer["ok"] is False and answer["error"]["code"] == code
    assert fragment in answer["error"]["message"]
    assert protocol.speaking == before and protocol.phase is phase  # refused: nothing changed


# -- replays (the same command delivered twice, e.g. reclaimed while in flight) ------------------


def test_a_say_delivered_twice_plays_once() -> None:
    protocol = active()
    say = command("say", "c-twice")
    first = feed(protocol, received(say))
    again = feed(protocol, received(say))
    assert [type(a) for a in first] == [Enqueue, Reply] and [type(a) for a in again] == [Reply]
    assert replies(first) == replies(again)


@pytest.mark.parametrize("kind", ["stop", "delete"])
def test_a_stop_or_delete_delivered_twice_is_answered_twice_when_down(kind: str) -> None:
    protocol = active()
    cmd = command(kind, "c-twice")
    feed(protocol, received(cmd))
    assert feed(protocol, received(cmd)) == []  # waits for the same teardown
    answers = replies(finish_teardown(protocol))
    assert [a["command_id"] for a in answers] == ["c-twice", "c-twice"] and answers[0] == answers[1]


@pytest.mark.parametrize("phase", [Phase.SETTING_UP, Phase.ACTIVE, Phase.STOPPED])
def test_a_repeated_create_answers_with_the_session_as_it_is(phase: Phase) -> None:
    protocol = PHASES[phase]()
    (answer,) = replies(feed(protocol, received(command("create"))))
    assert answer["ok"] and answer["speaking"]["status"] == protocol.speaking.status.value


# -- the create ----------------------------------------------------------------------------------


def test_a_create_refused_by_the_call_check_leaves_nothing() -> None:
    protocol = checking()
    error = CommandError(ErrorCode.NOT_FOUND, "call call-1 does not exist here")
    actions = feed(protocol, CallChecked(error))
    assert [type(a) for a in actions] == [Reply] and not any(
        isinstance(a, Persist) for a in actions
    )
    assert replies(actions)[0]["error"]["code"] == "not_found"
    assert protocol.phase is Phase.ABSENT and protocol.finished


def test_a_create_on_a_busy_call_names_the_session_holding_it() -> None:
    protocol = checking()
    actions = feed(protocol, CallChecked(), LockClaimed("other"))
    (answer,) = replies(actions)
    assert answer["error"]["details"] == {"existing_speaking_id": "other"}
    assert (
        "speaking other is already initiating or active on call call-1"
        in answer["error"]["message"]
    )
    assert protocol.phase is Phase.ABSENT


# -- hangup and stop during setup ----------------------------------------------------------------


@pytest.mark.parametrize("outcome", [SetupDone("ulaw", 5.0), SetupFailed("ARI 500")])
def test_hangup_during_setup_stops_with_reason_hangup(outcome: Input) -> None:
    protocol = setting_up()
    assert feed(protocol, ChannelGone("call-1")) == []  # the media being built is torn down after
    actions = feed(protocol, outcome)
    assert actions == [TearDown(Step.SILENCE, StopReason.HANGUP, protocol.speaking)]
    (stopped_event,) = [a for a in finish_teardown(protocol) if isinstance(a, Publish)]
    assert stopped_event.kind is EventType.SPEAKING_STOPPED
    assert stopped_event.data["reason"] == "hangup"


@pytest.mark.parametrize("kind", ["stop", "delete"])
def test_stop_during_setup_waits_for_the_setup_then_tears_down(kind: str) -> None:
    protocol = setting_up()
    cmd = command(kind)
    assert feed(protocol, received(cmd)) == []
    actions = feed(protocol, SetupDone("ulaw", 5.0))
    assert not any(isinstance(a, StartPlayback) for a in actions)  # never goes active
    assert actions == [TearDown(Step.SILENCE, StopReason(kind), protocol.speaking)]
    (answer,) = replies(finish_teardown(protocol))
    assert answer["command_id"] == cmd.command_id
    assert (answer["speaking"]["tm_delete"] != NEVER) is (kind == "delete")


def test_a_failed_setup_stops_with_its_error() -> None:
    protocol = setting_up()
    feed(protocol, SetupFailed("AriError: snoop refused"))
    published = [a for a in finish_teardown(protocol) if isinstance(a, Publish)]
    assert published == [
        Publish(
            EventType.SPEAKING_STOPPED,
            {"reason": "setup_failed", "error": "AriError: snoop refused"},
        )
    ]


# -- teardown failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("failing", TEARDOWN)
def test_a_failed_teardown_step_is_retried_with_backoff_until_it_succeeds(failing: Step) -> None:
    protocol = tearing_down()
    actions: list[Action] = []
    for step in TEARDOWN[: TEARDOWN.index(failing)]:
        actions = feed(protocol, StepDone(step))
    for attempt in (1, 2, 3):
        (retry,) = feed(protocol, StepFailed(failing, "ARI timed out"))
        assert retry == TearDown(failing, StopReason.STOP, protocol.speaking, retry_delay(attempt))
        assert protocol.phase is Phase.TEARING_DOWN  # never stopped until the step succeeds
    actions = feed(protocol, StepDone(failing))
    if failing is not TEARDOWN[-1]:
        actions += finish_teardown_from(protocol, TEARDOWN[TEARDOWN.index(failing) + 1])
    assert protocol.phase is Phase.STOPPED
    assert len(replies(actions)) == 1


def finish_teardown_from(protocol: SessionProtocol, step: Step) -> list[Action]:
    return feed(protocol, *(StepDone(s) for s in TEARDOWN[TEARDOWN.index(step) :]))


def test_retry_delays_grow_and_are_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert retry_delay(30) == 5.0


# -- shutdown ------------------------------------------------------------------------------------


def test_shutdown_while_checking_the_call_refuses_the_create() -> None:
    protocol = checking()
    assert feed(protocol, Shutdown()) == []
    (answer,) = replies(feed(protocol, CallChecked()))
    assert answer["error"]["code"] == "unavailable" and protocol.phase is Phase.ABSENT


def test_shutdown_while_claiming_the_lock_answers_then_tears_down() -> None:
    protocol = checking()
    feed(protocol, CallChecked(), Shutdown())
    actions = feed(protocol, LockClaimed())
    assert [type(a) for a in actions] == [Persist, Reply, TearDown]
    assert actions[-1].reason is StopReason.SHUTDOWN  # type: ignore[union-attr]


@pytest.mark.parametrize("phase", [Phase.SETTING_UP, Phase.ACTIVE])
def test_shutdown_of_a_live_session_stops_it_with_reason_shutdown(phase: Phase) -> None:
    protocol = PHASES[phase]()
    actions = feed(protocol, Shutdown())
    if phase is Phase.SETTING_UP:
        assert actions == []
        actions = feed(protocol, SetupDone("ulaw", 1.0))
    assert [a.reason for a in actions if isinstance(a, TearDown)] == [StopReason.SHUTDOWN]


@pytest.mark.parametrize("phase", [Phase.TEARING_DOWN, Phase.STOPPED])
def test_shutdown_while_stopping_or_stopped_changes_nothing(phase: Phase) -> None:
    protocol = PHASES[phase]()
    assert feed(protocol, Shutdown()) == [] and protocol.phase is phase


def test_an_internal_error_stops_a_live_session() -> None:
    protocol = active()
    actions = feed(protocol, InternalError("StartPlayback: KeyError"))
    assert [a.reason for a in actions if isinstance(a, TearDown)] == [StopReason.INTERNAL_ERROR]


# -- inputs a phase does not accept --------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (Phase.CHECKING, SetupDone("ulaw", 1.0)),
        (Phase.SETTING_UP, StepDone(Step.MEDIA)),
        (Phase.ACTIVE, LockClaimed()),
        (Phase.ACTIVE, StepDone(Step.SILENCE)),
        (Phase.STOPPED, SetupDone("ulaw", 1.0)),
        (Phase.STOPPED, SegmentEvent(EventType.SEGMENT_STARTED, "x")),
    ],
)
def test_an_input_the_phase_does_not_accept_is_a_typed_error(phase: Phase, event: Input) -> None:
    protocol = PHASES[phase]()
    with pytest.raises(ProtocolViolation, match=f"{phase.value} does not accept"):
        protocol.handle(event)


# -- bounds --------------------------------------------------------------------------------------


def test_queued_says_are_bounded_in_count_and_characters_and_free_up_as_they_finish() -> None:
    protocol = active(Limits(max_queued_says=2, max_queued_chars=5000))
    assert replies(feed(protocol, received(command("say", "a", "가" * 2500))))[0]["ok"]
    assert replies(feed(protocol, received(command("say", "b", "가" * 2500))))[0]["ok"]
    (full,) = replies(feed(protocol, received(command("say", "c", "x"))))
    assert full["error"]["code"] == "limit_exceeded" and "at most 2" in full["error"]["message"]
    feed(protocol, SegmentEvent(EventType.SEGMENT_FINISHED, "a"))
    (chars,) = replies(feed(protocol, received(command("say", "d", "가" * 2501))))
    assert chars["error"]["code"] == "limit_exceeded"
    assert "2500 characters queued" in chars["error"]["message"]  # characters, not bytes
    assert replies(feed(protocol, received(command("say", "e", "가" * 2500))))[0]["ok"]


def test_a_flush_empties_the_queue_bound() -> None:
    protocol = active(Limits(max_queued_says=1, max_queued_chars=100))
    feed(protocol, received(command("say", "a")))
    feed(protocol, Flushed("e-f", "f", ("a",)))
    assert replies(feed(protocol, received(command("say", "b"))))[0]["ok"]


def test_a_flush_delivered_again_is_answered_as_before_and_flushes_nothing_new() -> None:
    """A re-sent flush (its reply lost with a demoted primary) must not flush the says
    that came after the first delivery."""
    protocol = active()
    feed(protocol, received(command("say", "a")))
    assert any(
        isinstance(a, FlushPlayback) for a in feed(protocol, received(command("flush", "f")))
    )
    (first,) = replies(feed(protocol, Flushed("e-f", "f", ("a",))))
    feed(protocol, received(command("say", "b")))
    again = feed(protocol, received(command("flush", "f")))
    assert not any(isinstance(a, FlushPlayback) for a in again)
    assert replies(again) == [first] and first["flushed"] == ["a"]


# -- a session no worker runs: answered from its record (the worker's not-live path, the API) ----


def stored(**fields: str) -> dict[str, str]:
    protocol = stopped()
    return protocol.speaking.to_fields() | {"stop_reason": "hangup", "worker_id": "w"} | fields


def test_a_stored_stopped_session_answers_by_the_same_rules() -> None:
    record = stored()
    protocol = SessionProtocol.restore(SID, record, clock)
    assert protocol is not None and protocol.phase is Phase.STOPPED
    (say,) = replies(feed(protocol, received(command("say"))))
    assert say["error"]["message"] == "cannot say: the session is stopped (hangup)"
    (stop,) = replies(feed(protocol, received(command("stop"))))
    assert stop["ok"] and stop["speaking"]["status"] == "stopped"
    deleted = feed(protocol, received(command("delete")))
    persist = next(a for a in deleted if isinstance(a, Persist))
    assert persist.speaking.tm_delete != NEVER and replies(deleted)[0]["ok"]
    for kind in ("say", "stop", "delete", "create"):
        (gone,) = replies(feed(protocol, received(command(kind))))
        assert gone["error"]["code"] == "not_found"


def test_a_live_record_is_answered_only_by_its_worker() -> None:
    assert SessionProtocol.restore(SID, stored(status=Status.ACTIVE.value)) is None


def test_an_unknown_session_is_not_found_for_every_command() -> None:
    protocol = SessionProtocol.restore(SID, {})
    assert protocol is not None and protocol.phase is Phase.ABSENT
    for kind in ("say", "flush", "stop", "delete"):
        (answer,) = replies(feed(protocol, received(command(kind))))
        assert answer["error"] == {"code": "not_found", "message": f"speaking {SID} not found"}


def test_a_delete_during_teardown_is_stamped_even_after_the_record_was_written() -> None:
    protocol = tearing_down()
    feed(protocol, StepDone(Step.SILENCE), StepDone(Step.MEDIA), StepDone(Step.RECORD))
    delete = command("delete")
    feed(protocol, received(delete))
    actions = feed(protocol, StepDone(Step.RELEASE))
    persist = next(a for a in actions if isinstance(a, Persist))
    assert persist.speaking.tm_delete != NEVER
    assert [r["speaking"]["tm_delete"] != NEVER for r in replies(actions)] == [True, True]
