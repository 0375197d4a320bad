"""The interface every TTS engine implements, and the errors it raises."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class FailureKind(enum.StrEnum):
    """Why a synthesis failed, as counted in the metrics."""

    AUTH = "auth"  # the provider refused the credentials
    RATE_LIMIT = "rate_limit"  # 429 / throttled / quota
    SERVER = "server"  # 5xx / unavailable
    TIMEOUT = "timeout"  # no first byte in time
    DROPPED = "dropped"  # the connection ended in the middle of the audio
    STALLED = "stalled"  # the audio stopped flowing
    INVALID = "invalid"  # the provider refused the request (bad SSML, text too long...)
    OTHER = "other"


class EngineError(Exception):
    """Synthesis failed; the message is safe to show to the API's client: it names the
    provider and the reason, never a key, a URL with credentials or an internal host."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.OTHER) -> None:
        super().__init__(message)
        self.kind = kind


class UnsupportedVoice(EngineError):
    """The language or voice is not offered by this engine."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureKind.INVALID)


@dataclass(frozen=True)
class Voice:
    """A resolved voice: what the engine will actually use for a session."""

    voice_id: str
    language: str


class Synthesis(Protocol):
    """One session's use of an engine, at one output rate: what the player talks to.

    ``stream`` yields little-endian int16 mono PCM at ``rate`` in chunks of any size (odd
    byte counts included), and must never block the event loop (blocking SDKs run in an
    executor). Closing the iterator (``aclose``, or cancelling the task iterating it)
    stops the work at once and nothing of that stream is ever yielded again: a flush
    relies on it. It raises EngineError when the provider fails.
    """

    provider: str
    voice: Voice
    rate: int

    def split(self, text: str) -> list[str]:
        """The pieces to request one after another (sentences, or request-size limits)."""
        ...

    async def prepare(self) -> None:
        """Load the voice / open the provider's connection (while the session initiates)."""
        ...

    def stream(self, text: str) -> AsyncIterator[bytes]: ...

    async def close(self) -> None:
        """The session ended: release what ``prepare`` opened."""
        ...


class Engine(Protocol):
    """A TTS provider. ``open`` is cheap; the work starts in the synthesis' ``prepare``."""

    name: str

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        """Pick the voice for a session; raise ``UnsupportedVoice`` with what is allowed."""
        ...

    def open(self, voice: Voice, rate: int) -> Synthesis:
        """A synthesis for one session whose call takes ``rate`` Hz (8000 or 16000)."""
        ...
