"""The session protocol: every rule of a speaking session's life, with no I/O.

As h11 keeps HTTP/1.1 apart from sockets, this module keeps a session's rules apart from
ARI, Redis and audio. Inputs go in (:meth:`SessionProtocol.handle`), actions come out;
the runner (runner.py) carries the actions out and feeds their outcomes back in as
inputs. The whole life of a session is the table ``_TRANSITIONS`` at the bottom: one row
per (phase, input) that the phase accepts. Any other pair raises
:class:`ProtocolViolation` (a typed error, never a silent no-op).

The phases and the teardown are drawn in docs/architecture.md ("The session protocol").

Commands are acknowledged only after they took effect: a create once the session is
stored as initiating, a stop or delete once teardown is complete. A session that no
worker runs any more (stopped, or unknown) is answered by the same rules from its
stored record (:meth:`SessionProtocol.restore`): the worker's not-live path and the API
tier both use that.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from worker.commands import Create, Delete, Flush, Say, Stop
from worker.direction import Direction
from worker.errors import CommandError, ErrorCode, conflict, unavailable
from worker.events import EventType
from worker.model import Provider, ReferenceType, Speaking, Status, StopReason, timestamp
from worker.say_queue import Limits, SayQueue
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
    SetupDone,
    SetupFailed,
    Shutdown,
    StartPlayback,
    Step,
    StepDone,
    StepFailed,
    TearDown,
)


class Phase(enum.Enum):
    ABSENT = "absent"  # no such session here: never created, or its create was refused
    CHECKING = "checking"  # create received: the call is checked, its lock claimed
    SETTING_UP = "setting_up"  # stored as initiating, create answered, media being built
    ACTIVE = "active"
    TEARING_DOWN = "tearing_down"  # stopping: no command takes effect any more
    STOPPED = "stopped"  # final


class ProtocolViolation(Exception):
    """An input the session's phase does not accept (a bug in the caller)."""


_STOP_REASONS = {r.value for r in StopReason}


def retry_delay(attempt: int) -> float:
    """Backoff before retry number ``attempt`` (1, 2, ...) of a failed step: 0.1 s doubling
    up to 5 s, so a frozen Asterisk or Redis is polled gently until it answers."""
    return float(min(0.1 * 2 ** (attempt - 1), 5.0))


# -- the protocol -------------------------------------------------------------------------


class SessionProtocol:
    """One session's state and rules. ``handle`` returns the actions to carry out, in order.

    Raises ProtocolViolation for an input the current phase does not accept.
    """

    def __init__(
        self,
        speaking: Speaking,
        phase: Phase,
        *,
        limits: Limits | None = None,
        stop_reason: StopReason | None = None,
        clock: Callable[[], str] = timestamp,
    ) -> None:
        self.speaking = speaking
        self.phase = phase
        self.says = SayQueue(limits)
        self.stop_reason = stop_reason
        self._clock = clock
        self._create: tuple[str, str] | None = None  # (entry_id, command_id) being answered
        self._pending: list[tuple[str, str]] = []  # stop/delete commands answered at the end
        self._step_attempts: dict[Step, int] = {}
        self._hangup = False  # seen while the media was being built
        self._requested: StopReason | None = None  # a stop asked for during setup
        self._delete_requested = False
        self.error = ""  # why setup failed, for speaking_stopped

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def for_create(
        cls,
        create: Create,
        *,
        limits: Limits | None = None,
        clock: Callable[[], str] = timestamp,
    ) -> SessionProtocol:
        speaking = Speaking(
            id=create.speaking_id,
            customer_id=create.customer_id,
            reference_type=create.reference_type,
            reference_id=create.reference_id,
            language=create.language,
            provider=create.provider,
            voice_id=create.voice_id,
            direction=create.direction,
            tm_create=clock(),
        )
        return cls(speaking, Phase.ABSENT, limits=limits, clock=clock)

    @classmethod
    def restore(
        cls, speaking_id: str, record: dict[str, str], clock: Callable[[], str] = timestamp
    ) -> SessionProtocol | None:
        """The rules for a session no worker runs here, from its stored record: STOPPED,
        or ABSENT when there is no record. None when the record says it is live
        (initiating or active): only the worker that runs it can answer then."""
        if not record:
            # Only the id matters to an absent session; the other fields are placeholders.
            placeholder = Speaking(
                speaking_id, "", ReferenceType.CALL, "", "", Provider.OFFLINE, "", Direction.BOTH
            )
            return cls(placeholder, Phase.ABSENT, clock=clock)
        speaking = Speaking.from_fields(record)
        if speaking.status is not Status.STOPPED:
            return None
        reason = record.get("stop_reason", "")
        return cls(
            speaking,
            Phase.STOPPED,
            stop_reason=StopReason(reason) if reason in _STOP_REASONS else None,
            clock=clock,
        )

    # -- the entry point --------------------------------------------------------------------

    def handle(self, event: Input) -> list[Action]:
        kind = type(event)
        if isinstance(event, Received):
            kind = type(event.command)  # type: ignore[assignment]
        handler = _TRANSITIONS.get((self.phase, kind))
        if handler is None:
            raise ProtocolViolation(f"{self.phase.value} does not accept {kind.__name__}")
        return handler(self, event)

    @property
    def live(self) -> bool:
        """Initiating or active here (counts against the worker's capacity)."""
        return self.phase in (Phase.CHECKING, Phase.SETTING_UP, Phase.ACTIVE)

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.ABSENT, Phase.STOPPED)

    # -- helpers ----------------------------------------------------------------------------

    def _touch(self, **changes: Any) -> None:
        self.speaking = replace(self.speaking, tm_update=self._clock(), **changes)

    def _ok(self, entry_id: str, command_id: str, **extra: object) -> Reply:
        return Reply.ok(entry_id, command_id, self.speaking, **extra)

    def _refuse_received(self, event: Received, error: CommandError) -> list[Action]:
        return [Reply.refusal(event.entry_id, event.command.command_id, error)]

    def _not_found(self, event: Received) -> list[Action]:
        return self._refuse_received(
            event,
            CommandError(ErrorCode.NOT_FOUND, f"speaking {event.command.speaking_id} not found"),
        )

    def _begin_teardown(self, reason: StopReason) -> list[Action]:
        self.phase = Phase.TEARING_DOWN
        self.stop_reason = reason
        self._step_attempts = {}
        return [TearDown(TEARDOWN[0], reason, self.speaking)]

    def _stamp_delete(self) -> bool:
        """Stamp tm_delete if a delete was asked for; whether it changed the record."""
        if self._delete_requested and not self.speaking.deleted:
            self._touch(tm_delete=self._clock())
            return True
        return False

    # -- ABSENT -------------------------------------------------------------------------------

    def _absent_create(self, event: Received) -> list[Action]:
        if self.speaking.id != event.command.speaking_id:
            raise ProtocolViolation("a create for another session")
        self.phase = Phase.CHECKING
        self._create = (event.entry_id, event.command.command_id)
        return [CheckCall()]

    # -- CHECKING ---------------------------------------------------------------------------

    def _checking_create(self, event: Received) -> list[Action]:
        return self._refuse_received(
            event, conflict(f"speaking {self.speaking.id} is being created; ask again shortly")
        )

    def _checked(self, event: CallChecked) -> list[Action]:
        if event.error is not None:
            return self._refuse_create(event.error)
        if self._requested is StopReason.SHUTDOWN:
            return self._refuse_create(unavailable("the worker is shutting down; try again"))
        return [ClaimLock()]

    def _refuse_create(self, error: CommandError) -> list[Action]:
        assert self._create is not None
        self.phase = Phase.ABSENT
        entry_id, command_id = self._create
        return [Reply.refusal(entry_id, command_id, error)]

    def _lock_claimed(self, event: LockClaimed) -> list[Action]:
        if event.holder is not None:
            return self._refuse_create(
                conflict(
                    f"speaking {event.holder} is already initiating or active on "
                    f"{self.speaking.reference_type.value} {self.speaking.reference_id}; "
                    "stop it first",
                    existing_speaking_id=event.holder,
                )
            )
        assert self._create is not None
        self.phase = Phase.SETTING_UP
        actions: list[Action] = [Persist(self.speaking), self._ok(*self._create)]
        if self._requested is not None:  # shutdown while the lock was being claimed
            return actions + self._begin_teardown(self._requested)
        return [*actions, BuildMedia()]

    def _note_shutdown(self, event: Shutdown) -> list[Action]:
        """While the create or the media is still in flight: acted on once it lands."""
        self._requested = StopReason.SHUTDOWN
        return []

    def _note_hangup(self, event: ChannelGone) -> list[Action]:
        """Likewise: the check finds the call gone, or the setup's outcome stops it."""
        self._hangup = True
        return []

    # -- SETTING_UP ----------------------------------------------------------------------------

    def _setup_done(self, event: SetupDone) -> list[Action]:
        if self._requested is not None or self._hangup:
            reason = self._gone_reason() if self._hangup else self._requested
            assert reason is not None
            return self._begin_teardown(reason)
        self.phase = Phase.ACTIVE
        self._touch(status=Status.ACTIVE)
        return [
            StartPlayback(event.media_format),
            Persist(self.speaking, {"media_format": event.media_format}),
            Publish(
                EventType.SPEAKING_STARTED,
                {"setup_ms": f"{event.setup_ms:.1f}", "media_format": event.media_format},
            ),
        ]

    def _setup_failed(self, event: SetupFailed) -> list[Action]:
        self.error = event.error
        if self._hangup:
            return self._begin_teardown(self._gone_reason())
        return self._begin_teardown(self._requested or StopReason.SETUP_FAILED)

    def _setup_stop(self, event: Received) -> list[Action]:
        # Answered once the session is down; the media being built is torn down after.
        self._pending.append((event.entry_id, event.command.command_id))
        if isinstance(event.command, Delete):
            self._delete_requested = True
        if self._requested is None:
            deleting = isinstance(event.command, Delete)
            self._requested = StopReason.DELETE if deleting else StopReason.STOP
        return []

    def _not_active(self, event: Received) -> list[Action]:
        action = type(event.command).__name__.lower()
        if self.phase is Phase.TEARING_DOWN:
            error = conflict(f"cannot {action}: the session is stopping", status="stopping")
        else:
            error = conflict(
                f"cannot {action}: the session is still initiating; wait until status is active",
                status=Status.INITIATING.value,
            )
        return self._refuse_received(event, error)

    def _state(self, event: Received) -> list[Action]:
        """A repeated create (another command id) for this session: its state."""
        return [self._ok(event.entry_id, event.command.command_id)]

    # -- ACTIVE ------------------------------------------------------------------------------

    def _say(self, event: Received) -> list[Action]:
        say = event.command
        assert isinstance(say, Say)
        segment_id = say.command_id  # a replayed say finds its segment and adds nothing
        if self.says.seen(segment_id):
            return [self._ok(event.entry_id, say.command_id, segment_id=segment_id)]
        if (error := self.says.refusal(say.text)) is not None:
            return self._refuse_received(event, error)
        self.says.add(segment_id, say.text)
        return [
            Enqueue(segment_id, say.text),
            self._ok(event.entry_id, say.command_id, segment_id=segment_id),
        ]

    def _flush(self, event: Received) -> list[Action]:
        command_id = event.command.command_id
        if (earlier := self.says.flushed_by(command_id)) is not None:  # a replay
            return [self._ok(event.entry_id, command_id, flushed=list(earlier))]
        return [FlushPlayback(event.entry_id, command_id)]

    def _flushed(self, event: Flushed) -> list[Action]:
        self.says.flush_done(event.command_id, event.segment_ids)
        return [self._ok(event.entry_id, event.command_id, flushed=list(event.segment_ids))]

    def _active_stop(self, event: Received) -> list[Action]:
        self._pending.append((event.entry_id, event.command.command_id))
        self._delete_requested = isinstance(event.command, Delete)
        reason = StopReason.DELETE if self._delete_requested else StopReason.STOP
        return self._begin_teardown(reason)

    def _active_gone(self, event: ChannelGone) -> list[Action]:
        return self._begin_teardown(self._gone_reason())

    def _gone_reason(self) -> StopReason:
        """A call that hangs up, or a conference that ends (or whose way in is cut)."""
        if self.speaking.reference_type is ReferenceType.CONFBRIDGE:
            return StopReason.CONFERENCE_ENDED
        return StopReason.HANGUP

    def _active_shutdown(self, event: Shutdown) -> list[Action]:
        return self._begin_teardown(StopReason.SHUTDOWN)

    def _internal_error(self, event: InternalError) -> list[Action]:
        self.error = event.error
        return self._begin_teardown(StopReason.INTERNAL_ERROR)

    def _segment(self, event: SegmentEvent) -> list[Action]:
        if event.kind is not EventType.SEGMENT_STARTED:
            self.says.done(event.segment_id)  # finished, flushed or failed
        return [Publish(event.kind, {"segment_id": event.segment_id, **event.data})]

    # -- TEARING_DOWN --------------------------------------------------------------------------

    def _teardown_stop(self, event: Received) -> list[Action]:
        self._pending.append((event.entry_id, event.command.command_id))
        if isinstance(event.command, Delete):
            self._delete_requested = True  # stamped when the record is written
        return []

    def _ignored(self, event: Input) -> list[Action]:
        """Expected and meaningless here: our own hangup ends our channels, and a
        shutdown cannot stop a session faster than its teardown already does."""
        return []

    def _step_done(self, event: StepDone) -> list[Action]:
        assert self.stop_reason is not None
        position = TEARDOWN.index(event.step)
        if event.step is Step.MEDIA:
            # From here on nothing of the session is left in Asterisk: it is stopped.
            self._touch(status=Status.STOPPED)
            self._stamp_delete()
        if position + 1 < len(TEARDOWN):
            return [TearDown(TEARDOWN[position + 1], self.stop_reason, self.speaking)]
        self.phase = Phase.STOPPED
        data = {"reason": self.stop_reason.value} | ({"error": self.error} if self.error else {})
        actions: list[Action] = [Publish(EventType.SPEAKING_STOPPED, data)]
        if self._stamp_delete():  # a delete that came after the record was written
            actions.append(Persist(self.speaking))
        actions += [self._ok(entry_id, command_id) for entry_id, command_id in self._pending]
        self._pending = []
        return actions

    def _step_failed(self, event: StepFailed) -> list[Action]:
        assert self.stop_reason is not None
        attempt = self._step_attempts.get(event.step, 0) + 1
        self._step_attempts[event.step] = attempt
        return [TearDown(event.step, self.stop_reason, self.speaking, retry_delay(attempt))]

    # -- STOPPED (also: a stored session that no worker runs) ----------------------------------

    def _stopped_command(self, event: Received) -> list[Action]:
        command = event.command
        if self.speaking.deleted:
            return self._not_found(event)
        match command:
            case Say() | Flush():
                action = type(command).__name__.lower()
                reason = f" ({self.stop_reason.value})" if self.stop_reason else ""
                return self._refuse_received(
                    event,
                    conflict(
                        f"cannot {action}: the session is stopped{reason}",
                        status=Status.STOPPED.value,
                    ),
                )
            case Delete():
                self._touch(tm_delete=self._clock())
                return [Persist(self.speaking), self._ok(event.entry_id, command.command_id)]
            case _:  # stop of a stopped session, or a repeated create: its state
                return [self._ok(event.entry_id, command.command_id)]

    def _absent_command(self, event: Received) -> list[Action]:
        return self._not_found(event)


Handler = Callable[[SessionProtocol, Any], list[Action]]
P = Phase
_TRANSITIONS: dict[tuple[Phase, type], Handler] = {
    # A session no worker has (unknown id, or a refused create).
    (P.ABSENT, Create): SessionProtocol._absent_create,
    (P.ABSENT, Say): SessionProtocol._absent_command,
    (P.ABSENT, Flush): SessionProtocol._absent_command,
    (P.ABSENT, Stop): SessionProtocol._absent_command,
    (P.ABSENT, Delete): SessionProtocol._absent_command,
    # Create received: the call is checked, then its lock claimed. The public session
    # does not exist yet, so its other commands are unknown.
    (P.CHECKING, CallChecked): SessionProtocol._checked,
    (P.CHECKING, Create): SessionProtocol._checking_create,
    (P.CHECKING, LockClaimed): SessionProtocol._lock_claimed,
    (P.CHECKING, Say): SessionProtocol._absent_command,
    (P.CHECKING, Flush): SessionProtocol._absent_command,
    (P.CHECKING, Stop): SessionProtocol._absent_command,
    (P.CHECKING, Delete): SessionProtocol._absent_command,
    (P.CHECKING, ChannelGone): SessionProtocol._note_hangup,
    (P.CHECKING, Shutdown): SessionProtocol._note_shutdown,
    # Stored as initiating; the media path is being built.
    (P.SETTING_UP, SetupDone): SessionProtocol._setup_done,
    (P.SETTING_UP, SetupFailed): SessionProtocol._setup_failed,
    (P.SETTING_UP, Create): SessionProtocol._state,
    (P.SETTING_UP, Say): SessionProtocol._not_active,
    (P.SETTING_UP, Flush): SessionProtocol._not_active,
    (P.SETTING_UP, Stop): SessionProtocol._setup_stop,
    (P.SETTING_UP, Delete): SessionProtocol._setup_stop,
    (P.SETTING_UP, ChannelGone): SessionProtocol._note_hangup,
    (P.SETTING_UP, Shutdown): SessionProtocol._note_shutdown,
    (P.SETTING_UP, InternalError): SessionProtocol._internal_error,
    # Active: speech flows.
    (P.ACTIVE, Create): SessionProtocol._state,
    (P.ACTIVE, Say): SessionProtocol._say,
    (P.ACTIVE, Flush): SessionProtocol._flush,
    (P.ACTIVE, Flushed): SessionProtocol._flushed,
    (P.ACTIVE, Stop): SessionProtocol._active_stop,
    (P.ACTIVE, Delete): SessionProtocol._active_stop,
    (P.ACTIVE, ChannelGone): SessionProtocol._active_gone,
    (P.ACTIVE, Shutdown): SessionProtocol._active_shutdown,
    (P.ACTIVE, SegmentEvent): SessionProtocol._segment,
    (P.ACTIVE, InternalError): SessionProtocol._internal_error,
    # Stopping: each step in turn, retried until it succeeds; later stops wait for the end.
    (P.TEARING_DOWN, StepDone): SessionProtocol._step_done,
    (P.TEARING_DOWN, StepFailed): SessionProtocol._step_failed,
    (P.TEARING_DOWN, Create): SessionProtocol._state,
    (P.TEARING_DOWN, Say): SessionProtocol._not_active,
    (P.TEARING_DOWN, Flush): SessionProtocol._not_active,
    (P.TEARING_DOWN, Stop): SessionProtocol._teardown_stop,
    (P.TEARING_DOWN, Delete): SessionProtocol._teardown_stop,
    (P.TEARING_DOWN, ChannelGone): SessionProtocol._ignored,
    (P.TEARING_DOWN, Shutdown): SessionProtocol._ignored,
    (P.TEARING_DOWN, SegmentEvent): SessionProtocol._segment,  # the flushes of SILENCE
    (P.TEARING_DOWN, Flushed): SessionProtocol._flushed,  # a flush that raced the stop
    (P.TEARING_DOWN, InternalError): SessionProtocol._ignored,  # the step is retried anyway
    # Stopped: final. Answered from the stored record too (worker's not-live path, API).
    (P.STOPPED, Create): SessionProtocol._stopped_command,
    (P.STOPPED, Say): SessionProtocol._stopped_command,
    (P.STOPPED, Flush): SessionProtocol._stopped_command,
    (P.STOPPED, Stop): SessionProtocol._stopped_command,
    (P.STOPPED, Delete): SessionProtocol._stopped_command,
    (P.STOPPED, ChannelGone): SessionProtocol._ignored,
    (P.STOPPED, Shutdown): SessionProtocol._ignored,
}
