"""The Speaking object and its enumerations, as the public API documents them."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.direction import Direction

#: How the public API writes "not yet" for a timestamp.
NEVER = "9999-01-01 00:00:00.000000"


def timestamp(now: datetime | None = None) -> str:
    """Format a UTC instant as the API does: ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S.%f")


class Status(enum.StrEnum):
    INITIATING = "initiating"
    ACTIVE = "active"
    STOPPED = "stopped"


class ReferenceType(enum.StrEnum):
    CALL = "call"
    CONFBRIDGE = "confbridge"


class Provider(enum.StrEnum):
    ELEVENLABS = "elevenlabs"
    GCP = "gcp"
    AWS = "aws"
    OFFLINE = "offline"


class StopReason(enum.StrEnum):
    """Why a session ended; carried by the ``speaking_stopped`` event."""

    STOP = "stop"
    DELETE = "delete"
    HANGUP = "hangup"
    CONFERENCE_ENDED = "conference_ended"  # its bridge is gone, or no participant is left
    SHUTDOWN = "shutdown"
    SETUP_FAILED = "setup_failed"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"  # a bug: the session could not go on


@dataclass
class Speaking:
    """One speaking session, with exactly the fields of the public Speaking object.

    Typed inside the product (enums); ``to_fields`` / ``from_fields`` convert at the edge
    (Redis hashes, JSON replies). ``from_fields`` raises ``ValueError`` (or KeyError for a
    missing field) on a record that is not a session.
    """

    id: str
    customer_id: str
    reference_type: ReferenceType
    reference_id: str
    language: str
    provider: Provider
    voice_id: str
    direction: Direction
    status: Status = Status.INITIATING
    tm_create: str = field(default_factory=timestamp)
    tm_update: str = ""
    tm_delete: str = NEVER

    def __post_init__(self) -> None:
        if not self.tm_update:
            self.tm_update = self.tm_create

    @property
    def deleted(self) -> bool:
        return self.tm_delete != NEVER

    def to_fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Speaking:
        names = cls.__dataclass_fields__
        values: dict[str, Any] = {k: v for k, v in fields.items() if k in names}
        values["reference_type"] = ReferenceType(values["reference_type"])
        values["provider"] = Provider(values["provider"])
        values["direction"] = Direction(values["direction"])
        values["status"] = Status(values.get("status", Status.INITIATING.value))
        return cls(**values)
