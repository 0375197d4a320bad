"""The Speaking object and its enumerations, as the public API documents them."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

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
    SHUTDOWN = "shutdown"
    SETUP_FAILED = "setup_failed"
    WORKER_LOST = "worker_lost"


@dataclass
class Speaking:
    """One speaking session, with exactly the fields of the public Speaking object."""

    id: str
    customer_id: str
    reference_type: str
    reference_id: str
    language: str
    provider: str
    voice_id: str
    direction: str
    status: str = Status.INITIATING.value
    tm_create: str = field(default_factory=timestamp)
    tm_update: str = ""
    tm_delete: str = NEVER

    def __post_init__(self) -> None:
        if not self.tm_update:
            self.tm_update = self.tm_create

    def to_fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Speaking:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in names})
