"""Messages of the session protocol (worker/session.py): the inputs it accepts, the
actions it asks for, and the teardown steps. Plain frozen dataclasses, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from worker.commands import Create, Delete, Flush, Say, Stop
from worker.errors import CommandError
from worker.events import EventType
from worker.model import Speaking, StopReason

SessionCommand = Create | Say | Flush | Stop | Delete


@dataclass(frozen=True)
class Inbound:
    """A command read from the stream, to be answered and acknowledged once applied.
    ``expires_at_ms``: when its sender stops waiting (0: never)."""

    entry_id: str
    command: SessionCommand
    expires_at_ms: int = 0

    def expired(self, now_ms: float) -> bool:
        """A create, say or flush applied after its sender gave up would surprise it (a
        session nobody knows of, speech out of turn); a late stop or delete is harmless."""
        late = self.expires_at_ms and now_ms > self.expires_at_ms
        return bool(late) and isinstance(self.command, Create | Say | Flush)


class Step(enum.Enum):
    """Teardown steps, in order. Each is retried until it succeeds."""

    SILENCE = "silence"  # off the clock, player closed (unfinished segments flushed)
    MEDIA = "media"  # our channels hung up and destroyed, bridge destroyed (confirmed by ARI)
    RECORD = "record"  # the session stored as stopped
    RELEASE = "release"  # the call's lock released


TEARDOWN = (Step.SILENCE, Step.MEDIA, Step.RECORD, Step.RELEASE)


class ProtocolViolation(Exception):
    """An input the session's phase does not accept (a bug in the caller)."""


# -- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A command read from the stream for this session."""

    entry_id: str
    command: SessionCommand


@dataclass(frozen=True)
class CallChecked:
    """The referenced call was looked up: ``error`` says why it cannot be used."""

    error: CommandError | None = None


@dataclass(frozen=True)
class LockClaimed:
    """The one-session-per-call lock: ``holder`` is the other session holding it, if any."""

    holder: str | None = None


@dataclass(frozen=True)
class SetupDone:
    media_format: str
    setup_ms: float


@dataclass(frozen=True)
class SetupFailed:
    error: str


@dataclass(frozen=True)
class Flushed:
    """Playback was flushed for the command ``entry_id``/``command_id``."""

    entry_id: str
    command_id: str
    segment_ids: tuple[str, ...]


@dataclass(frozen=True)
class ChannelGone:
    """The call, or a channel of ours, ended (from ARI)."""

    channel_id: str


@dataclass(frozen=True)
class SegmentEvent:
    """Playback news about a segment: started, finished, flushed or failed."""

    kind: EventType
    segment_id: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepDone:
    step: Step


@dataclass(frozen=True)
class StepFailed:
    step: Step
    error: str


@dataclass(frozen=True)
class Shutdown:
    """The worker is stopping."""


@dataclass(frozen=True)
class InternalError:
    """Carrying out an action failed unexpectedly (a bug): the session cannot go on."""

    error: str


Input = (
    Received
    | CallChecked
    | LockClaimed
    | SetupDone
    | SetupFailed
    | Flushed
    | ChannelGone
    | SegmentEvent
    | StepDone
    | StepFailed
    | Shutdown
    | InternalError
)


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckCall:
    """Look the call up in Asterisk (exists, answered, not someone else's); -> CallChecked."""


@dataclass(frozen=True)
class ClaimLock:
    """Take the call's lock; -> LockClaimed."""


@dataclass(frozen=True)
class Persist:
    """Store the session record (``extra``: fields beside the public ones)."""

    speaking: Speaking
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """Answer a command and acknowledge its stream entry."""

    entry_id: str
    command_id: str
    body: dict[str, Any]

    @classmethod
    def ok(cls, entry_id: str, command_id: str, speaking: Speaking, **extra: object) -> Reply:
        body = {"ok": True, "command_id": command_id, "speaking": speaking.to_fields()}
        return cls(entry_id, command_id, body | extra)

    @classmethod
    def refusal(cls, entry_id: str, command_id: str, error: CommandError) -> Reply:
        body = {"ok": False, "command_id": command_id, "error": error.to_dict()}
        return cls(entry_id, command_id, body)


@dataclass(frozen=True)
class Publish:
    kind: EventType
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildMedia:
    """Build the media path and prepare the engine; -> SetupDone or SetupFailed."""


@dataclass(frozen=True)
class StartPlayback:
    media_format: str


@dataclass(frozen=True)
class Enqueue:
    segment_id: str
    text: str


@dataclass(frozen=True)
class FlushPlayback:
    """Silence now and drop the queue; -> Flushed."""

    entry_id: str
    command_id: str


@dataclass(frozen=True)
class TearDown:
    """Carry out one teardown step after ``delay_s``; -> StepDone or StepFailed.
    ``speaking`` is the record the RECORD step stores (with ``reason``)."""

    step: Step
    reason: StopReason
    speaking: Speaking
    delay_s: float = 0.0


Action = (
    CheckCall
    | ClaimLock
    | Persist
    | Reply
    | Publish
    | BuildMedia
    | StartPlayback
    | Enqueue
    | FlushPlayback
    | TearDown
)
