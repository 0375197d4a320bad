"""Pure core: the session state machine and the direction -> whisper table."""

from __future__ import annotations

import pytest

from worker.direction import Direction, Whisper, whisper_for
from worker.errors import CommandError, ErrorCode
from worker.model import NEVER, Speaking, Status, StopReason
from worker.session import SessionState


def new_state() -> SessionState:
    return SessionState(Speaking("s1", "c1", "call", "ch1", "en-US", "offline", "", "both"))


def test_whisper_follows_the_measured_table() -> None:
    # Whisper "out" on the referenced channel's snoop = that channel's own (remote) party hears.
    assert whisper_for(Direction.IN) is Whisper.OUT
    assert whisper_for(Direction.OUT) is Whisper.IN
    assert whisper_for(Direction.BOTH) is Whisper.BOTH


def test_lifecycle_initiating_active_stopped() -> None:
    state = new_state()
    assert state.status is Status.INITIATING
    assert state.speaking.tm_update == state.speaking.tm_create
    assert state.activate()
    assert state.speaking.status == Status.ACTIVE.value
    assert state.stop(StopReason.HANGUP)
    assert state.speaking.status == Status.STOPPED.value
    assert state.stop_reason is StopReason.HANGUP
    assert not state.activate()  # stopped is final


def test_stop_is_idempotent_and_keeps_the_first_reason() -> None:
    state = new_state()
    state.activate()
    assert state.stop(StopReason.STOP)
    updated = state.speaking.tm_update
    assert not state.stop(StopReason.HANGUP)
    assert state.stop_reason is StopReason.STOP and state.speaking.tm_update == updated


def test_say_refused_while_initiating_and_after_stop() -> None:
    state = new_state()
    with pytest.raises(CommandError, match="still initiating") as info:
        state.require_active("say")
    assert info.value.code is ErrorCode.CONFLICT
    state.activate()
    state.require_active("say")
    state.stop(StopReason.HANGUP)
    with pytest.raises(CommandError, match=r"stopped \(hangup\)"):
        state.require_active("say")


def test_delete_stops_and_stamps_tm_delete_once() -> None:
    state = new_state()
    state.activate()
    assert state.speaking.tm_delete == NEVER
    assert state.delete()
    assert state.status is Status.STOPPED and state.deleted
    stamp = state.speaking.tm_delete
    assert not state.delete() and state.speaking.tm_delete == stamp
    with pytest.raises(CommandError) as info:
        state.require_active("flush")
    assert info.value.code is ErrorCode.NOT_FOUND


def test_timestamps_use_the_documented_format() -> None:
    speaking = new_state().speaking
    assert len(speaking.tm_create) == len("2025-06-15 14:30:00.123456")
    assert speaking.tm_create[4] == "-" and speaking.tm_create[10] == " "
    assert Speaking.from_fields(speaking.to_fields()) == speaking
