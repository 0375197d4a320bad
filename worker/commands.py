"""Commands the worker takes from Redis, parsed and validated without any I/O.

A command is a flat map of strings (a Redis stream entry). Parsing either yields
a typed command or raises ``CommandError`` saying what was wrong and what is
allowed; nothing is half-applied because validation happens before any effect.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from worker.direction import DEFAULT_DIRECTION, Direction
from worker.errors import CommandError, invalid
from worker.model import Provider, ReferenceType

#: Limits are in characters (``len`` of a Python str), never bytes.
MAX_TEXT_CHARS = 5000
MAX_VOICE_ID_CHARS = 128
MAX_REFERENCE_ID_CHARS = 128
#: What an Asterisk channel id (``<system name>-<epoch>.<seq>``, or an id an ARI
#: application chose), a bridge id or a ConfBridge room name is spelled with here. No
#: '/', no control character, no NUL (Asterisk cuts an id at a NUL: ``x\0y`` found
#: channel ``x``), and never '.' or '..' (path segments of an ARI URL).
_REFERENCE_ID = re.compile(rf"[A-Za-z0-9._+:@-]{{1,{MAX_REFERENCE_ID_CHARS}}}", re.ASCII)

#: Ids end up inside Asterisk channel ids and Redis keys: keep them to a safe alphabet.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_ID_RULE = "1-64 characters: letters, digits, '.', '_', ':' or '-' (UUIDs fit)"
#: BCP 47 (RFC 5646) tag: language[-script][-region](-variant)*(-extension)*; the primary
#: language must be an ISO 639 code of 2-3 letters (the 4-8 letter forms are unused in practice).
_BCP47 = re.compile(
    r"^[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*"
    r"(?:-[xX](?:-[A-Za-z0-9]{1,8})+)?$"
)


class CommandType(enum.StrEnum):
    CREATE = "create"
    SAY = "say"
    FLUSH = "flush"
    STOP = "stop"
    DELETE = "delete"
    LOCATE = "locate"


@dataclass(frozen=True)
class Command:
    """Fields every command carries."""

    command_id: str
    speaking_id: str


@dataclass(frozen=True)
class Create(Command):
    customer_id: str
    reference_type: ReferenceType
    reference_id: str
    language: str
    provider: Provider
    voice_id: str
    direction: Direction


@dataclass(frozen=True)
class Say(Command):
    text: str


@dataclass(frozen=True)
class Flush(Command):
    pass


@dataclass(frozen=True)
class Stop(Command):
    pass


@dataclass(frozen=True)
class Delete(Command):
    pass


@dataclass(frozen=True)
class Locate(Command):
    """Does this worker's Asterisk hold the call? Read-only: used to route a create."""

    reference_type: ReferenceType
    reference_id: str


AnyCommand = Create | Say | Flush | Stop | Delete | Locate


def is_id(value: str) -> bool:
    """Whether ``value`` is a well-formed speaking or command id."""
    return bool(_ID.fullmatch(value))


def is_bcp47(tag: str) -> bool:
    return bool(_BCP47.fullmatch(tag))


def _enum(cls: type[enum.StrEnum], field: str, value: str) -> str:
    allowed = [m.value for m in cls]
    if value not in allowed:
        raise invalid(f"{field} {value!r} is not one of {', '.join(allowed)}", allowed)
    return value


def _required_id(fields: dict[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise invalid(f"{name} is missing; it must be {_ID_RULE}")
    if not _ID.fullmatch(value):
        raise invalid(f"{name} {value[:80]!r} is malformed; it must be {_ID_RULE}")
    return value


def parse_command(fields: dict[str, str]) -> AnyCommand:
    """Validate a stream entry and return the command it describes."""
    kind = _enum(CommandType, "type", fields.get("type", ""))
    command_id = _required_id(fields, "command_id")
    speaking_id = _required_id(fields, "speaking_id")
    match CommandType(kind):
        case CommandType.CREATE:
            return _parse_create(fields, command_id, speaking_id)
        case CommandType.SAY:
            return Say(command_id, speaking_id, validate_text(fields.get("text")))
        case CommandType.FLUSH:
            return Flush(command_id, speaking_id)
        case CommandType.STOP:
            return Stop(command_id, speaking_id)
        case CommandType.DELETE:
            return Delete(command_id, speaking_id)
        case CommandType.LOCATE:
            return Locate(
                command_id,
                speaking_id,
                ReferenceType(
                    _enum(ReferenceType, "reference_type", fields.get("reference_type", ""))
                ),
                _reference_id(fields),
            )


def validate_text(text: str | None) -> str:
    if text is None:
        raise invalid("text is missing; it must be 1 to 5000 characters")
    if not text.strip():
        raise invalid("text is empty; it must contain 1 to 5000 characters of speech")
    if len(text) > MAX_TEXT_CHARS:
        raise invalid(
            f"text has {len(text)} characters; at most {MAX_TEXT_CHARS} characters are allowed"
        )
    return text


def _reference_id(fields: dict[str, str]) -> str:
    reference_id = fields.get("reference_id", "")
    if not reference_id:
        raise invalid("reference_id is missing; it must be the id of a live call or conference")
    if not _REFERENCE_ID.fullmatch(reference_id) or set(reference_id) == {"."}:
        raise invalid(
            f"reference_id is malformed; it must be 1 to {MAX_REFERENCE_ID_CHARS} characters, "
            "each a letter, a digit or one of . _ - + : @ (and not only dots)"
        )
    return reference_id


def _parse_create(fields: dict[str, str], command_id: str, speaking_id: str) -> Create:
    reference_type = fields.get("reference_type", "")
    if not reference_type:
        raise invalid(
            "reference_type is missing; it must be call or confbridge", ["call", "confbridge"]
        )
    _enum(ReferenceType, "reference_type", reference_type)
    reference_id = _reference_id(fields)
    language = fields.get("language", "")
    if not is_bcp47(language):
        raise invalid(
            f"language {language[:40]!r} is not a valid BCP 47 tag; use e.g. en-US, ko-KR, ja-JP"
        )
    provider = fields.get("provider") or Provider.ELEVENLABS.value
    _enum(Provider, "provider", provider)
    direction = fields.get("direction") or DEFAULT_DIRECTION.value
    _enum(Direction, "direction", direction)
    if reference_type == ReferenceType.CONFBRIDGE.value and direction != Direction.BOTH.value:
        # Every participant hears a conference's speech: there is no "side" to choose.
        raise invalid(
            f"direction {direction!r} is not allowed for a conference; conferences accept "
            "only both (every participant hears the speech)",
            [Direction.BOTH.value],
        )
    voice_id = fields.get("voice_id", "")
    if len(voice_id) > MAX_VOICE_ID_CHARS:
        raise invalid(f"voice_id is longer than {MAX_VOICE_ID_CHARS} characters")
    return Create(
        command_id,
        speaking_id,
        customer_id=fields.get("customer_id", ""),
        reference_type=ReferenceType(reference_type),
        reference_id=reference_id,
        language=language,
        provider=Provider(provider),
        voice_id=voice_id,
        direction=Direction(direction),
    )


__all__ = ["CommandError", "parse_command"]
