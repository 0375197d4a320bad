"""The ``offline`` provider: piper's natural English voice, espeak-ng for the rest.

Voice ids: ``en_US-joe-medium`` (piper, English only), ``espeak`` (espeak-ng, voice
picked from the language) or ``espeak:<voice>`` (a named espeak-ng voice, e.g.
``espeak:ko``). An empty voice id picks piper for English and espeak-ng for every
other language, so the provider speaks whatever espeak-ng can without keys or network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from worker.engines.base import Voice
from worker.engines.espeak import EspeakEngine
from worker.engines.piper import VOICE_ID as PIPER_VOICE
from worker.engines.piper import PiperEngine

ESPEAK_PREFIX = "espeak"


class OfflineEngine:
    """Dispatches each voice to piper or espeak-ng; both run on this machine."""

    name = "offline"

    def __init__(self, default_voice: str = "") -> None:
        self._piper = PiperEngine()
        self._espeak = EspeakEngine()
        self._default_voice = default_voice

    def _split(self, voice_id: str) -> tuple[PiperEngine | EspeakEngine, str]:
        if voice_id == ESPEAK_PREFIX or voice_id.startswith(ESPEAK_PREFIX + ":"):
            return self._espeak, voice_id.partition(":")[2]
        return self._piper, voice_id

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        voice_id = voice_id or self._default_voice
        if not voice_id:
            english = language.lower().split("-")[0] == "en"
            voice_id = PIPER_VOICE if english else ESPEAK_PREFIX
        engine, inner = self._split(voice_id)
        resolved = engine.resolve_voice(language, inner)
        if engine is self._piper:
            return resolved
        return Voice(f"{ESPEAK_PREFIX}:{resolved.voice_id}", resolved.language)

    def sample_rate(self, voice: Voice) -> int:
        engine, inner = self._split(voice.voice_id)
        return engine.sample_rate(Voice(inner, voice.language))

    async def prepare(self, voice: Voice) -> None:
        engine, inner = self._split(voice.voice_id)
        await engine.prepare(Voice(inner, voice.language))

    def synthesize(self, text: str, voice: Voice) -> AsyncIterator[bytes]:
        engine, inner = self._split(voice.voice_id)
        return engine.synthesize(text, Voice(inner, voice.language))
