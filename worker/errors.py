"""Errors a command can be refused with; each maps to one HTTP status in the API tier."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorCode(enum.StrEnum):
    INVALID = "invalid_argument"  # 400: the command itself is wrong
    NOT_FOUND = "not_found"  # 404: no such session (or deleted)
    CONFLICT = "conflict"  # 409: the session or the call is not in a state that allows it
    LIMIT = "limit_exceeded"  # 429: a bound was reached (queued says, event streams)
    UNAVAILABLE = "unavailable"  # 503: Asterisk, Redis or capacity: try again later
    INTERNAL = "internal_error"  # 500: a bug; the command was answered, not lost


@dataclass
class CommandError(Exception):
    """A refused command: what was wrong, and what would have been allowed.

    ``message`` is shown to API clients as is: never put a secret in it.
    """

    code: ErrorCode
    message: str
    allowed: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code.value, "message": self.message}
        if self.allowed:
            out["allowed"] = self.allowed
        if self.details:
            out["details"] = self.details
        return out


def invalid(message: str, allowed: list[str] | None = None) -> CommandError:
    return CommandError(ErrorCode.INVALID, message, allowed or [])


def conflict(message: str, **details: str) -> CommandError:
    return CommandError(ErrorCode.CONFLICT, message, details=details)


def limit(message: str, **details: str) -> CommandError:
    return CommandError(ErrorCode.LIMIT, message, details=details)


def unavailable(message: str) -> CommandError:
    return CommandError(ErrorCode.UNAVAILABLE, message)
