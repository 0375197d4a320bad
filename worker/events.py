"""Events the worker publishes about sessions and their segments."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from worker.model import timestamp


class EventType(enum.StrEnum):
    SPEAKING_STARTED = "speaking_started"  # the session became active
    SPEAKING_STOPPED = "speaking_stopped"  # the session stopped; carries ``reason``
    SEGMENT_STARTED = "segment_started"  # the segment's first frame left for Asterisk
    SEGMENT_FINISHED = "segment_finished"  # its last frame left
    SEGMENT_FLUSHED = "segment_flushed"  # dropped by flush/stop before it finished
    SEGMENT_FAILED = "segment_failed"  # the engine failed; carries ``reason``
    COMMAND_REJECTED = "command_rejected"  # a stream entry that could not even be parsed


@dataclass(frozen=True)
class Event:
    type: EventType
    speaking_id: str
    data: dict[str, str] = field(default_factory=dict)
    timestamp: str = field(default_factory=timestamp)

    def to_fields(self) -> dict[str, str]:
        return {
            "type": self.type.value,
            "speaking_id": self.speaking_id,
            "timestamp": self.timestamp,
            **self.data,
        }
