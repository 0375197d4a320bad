"""The interface every TTS engine implements, and the errors it raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class EngineError(Exception):
    """Synthesis failed; ``message`` is safe to show to the API's client (no secrets)."""


class UnsupportedVoice(EngineError):
    """The language or voice is not offered by this engine."""


@dataclass(frozen=True)
class Voice:
    """A resolved voice: what the engine will actually use for a session."""

    voice_id: str
    language: str


class Engine(Protocol):
    """A TTS engine.

    ``synthesize`` yields little-endian int16 mono PCM at ``sample_rate`` in chunks of
    any size (odd byte counts included). It must never block the event loop: blocking
    SDKs run in an executor. Cancelling the iterator (``aclose``, or cancelling the
    task iterating it) must stop the work promptly: a flush relies on it.
    """

    name: str

    def sample_rate(self, voice: Voice) -> int: ...

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        """Pick the voice for a session; raise ``UnsupportedVoice`` with what is allowed."""
        ...

    async def prepare(self, voice: Voice) -> None:
        """Load whatever the voice needs (models, connections) before the session is active."""
        ...

    def synthesize(self, text: str, voice: Voice) -> AsyncIterator[bytes]: ...
