"""The ``offline`` provider: piper's natural English voice, espeak-ng for the rest.

Voice ids: ``en_US-joe-medium`` (piper, English only), ``espeak`` (espeak-ng, voice
picked from the language) or ``espeak:<voice>`` (a named espeak-ng voice, e.g.
``espeak:ko``). An empty voice id picks piper for English and espeak-ng for every
other language, so the provider speaks whatever espeak-ng can without keys or network.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator

from worker.engines.base import Synthesis, UnsupportedVoice, Voice
from worker.engines.espeak import EspeakEngine
from worker.engines.piper import VOICE_ID as PIPER_VOICE
from worker.engines.piper import PiperEngine
from worker.segmentation import split_sentences

ESPEAK_PREFIX = "espeak"


class VoiceFamily(enum.StrEnum):
    """Which of the two local engines speaks a voice: each has its own CPU budget."""

    PIPER = "piper"
    ESPEAK = "espeak"


def voice_family(voice_id: str) -> VoiceFamily:
    """The engine behind an offline voice id (resolved or as asked: empty is piper's
    default only for English, so callers pass the resolved id)."""
    if voice_id == ESPEAK_PREFIX or voice_id.startswith(ESPEAK_PREFIX + ":"):
        return VoiceFamily.ESPEAK
    return VoiceFamily.PIPER


class OfflineEngine:
    """Dispatches each voice to piper or espeak-ng; both run on this machine."""

    name = "offline"

    def __init__(self, default_voice: str = "") -> None:
        self._piper = PiperEngine()
        self._espeak = EspeakEngine()
        self._default_voice = default_voice

    def _split(self, voice_id: str) -> tuple[PiperEngine | EspeakEngine, str]:
        if voice_family(voice_id) is VoiceFamily.ESPEAK:
            return self._espeak, voice_id.partition(":")[2]
        return self._piper, voice_id

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        if not voice_id and self._default_voice:
            try:  # the deployment's default, where it speaks the language
                return self.resolve_voice(language, self._default_voice)
            except UnsupportedVoice:
                pass
        if not voice_id:
            english = language.lower().split("-")[0] == "en"
            voice_id = PIPER_VOICE if english else ESPEAK_PREFIX
        engine, inner = self._split(voice_id)
        resolved = engine.resolve_voice(language, inner)
        if engine is self._piper:
            return resolved
        return Voice(f"{ESPEAK_PREFIX}:{resolved.voice_id}", resolved.language)

    def open(self, voice: Voice, rate: int) -> Synthesis:
        """At the engine's own rate (22,050 Hz): the player resamples to the call's."""
        engine, inner = self._split(voice.voice_id)
        return OfflineSynthesis(engine, voice, Voice(inner, voice.language))


class OfflineSynthesis:
    """A session's piper or espeak-ng voice, one sentence at a time (piper yields one
    chunk per sentence: the first audio leaves after the first sentence, not the say)."""

    provider = "offline"

    def __init__(self, engine: PiperEngine | EspeakEngine, voice: Voice, inner: Voice) -> None:
        self._engine = engine
        self.voice = voice
        self._inner = inner
        self.rate = engine.sample_rate(inner)

    def split(self, text: str) -> list[str]:
        return split_sentences(text)

    async def prepare(self) -> None:
        await self._engine.prepare(self._inner)

    def stream(self, text: str) -> AsyncIterator[bytes]:
        return self._engine.synthesize(text, self._inner)

    async def close(self) -> None:
        return None
