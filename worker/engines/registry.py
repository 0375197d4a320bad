"""Which engine serves which provider on this worker, and the fallback chain."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from worker.engines.base import Engine, Synthesis, UnsupportedVoice, Voice
from worker.engines.providers import not_configured
from worker.errors import invalid
from worker.model import Provider

log = logging.getLogger(__name__)


class EngineRegistry:
    """The providers this deployment has configured, their engines, and the providers to
    fall back on (in order) when a segment's provider fails before any of its audio was
    played.

    ``unconfigured`` maps each provider that cannot be offered to how to configure it.
    """

    def __init__(
        self,
        engines: dict[Provider, Engine],
        fallbacks: Sequence[Provider] = (),
        unconfigured: dict[str, str] | None = None,
    ) -> None:
        self._engines = engines
        self._fallbacks = [p for p in fallbacks if p in engines]
        self.unconfigured = unconfigured or {}

    @property
    def configured(self) -> list[str]:
        return [p.value for p in self._engines]

    def engine_for(self, provider: Provider) -> Engine:
        engine = self._engines.get(provider)
        if engine is None:
            raise invalid(not_configured(provider.value, self.configured), self.configured)
        return engine

    def engines(self) -> dict[Provider, Engine]:
        return dict(self._engines)

    def resolve(self, provider: Provider, language: str, voice_id: str) -> tuple[Engine, Voice]:
        """The engine and voice for a create, or an invalid-argument error saying why not."""
        engine = self.engine_for(provider)
        try:
            return engine, engine.resolve_voice(language, voice_id)
        except UnsupportedVoice as exc:
            raise invalid(f"provider {provider.value}: {exc}") from exc

    def open(self, provider: Provider, voice: Voice, rate: int) -> list[Synthesis]:
        """The session's synthesis, then one per fallback provider that can speak its
        language (with that provider's default voice for it)."""
        syntheses = [self.engine_for(provider).open(voice, rate)]
        for fallback in self._fallbacks:
            if fallback is provider:
                continue
            engine = self._engines[fallback]
            try:
                substitute = engine.resolve_voice(voice.language, "")
            except UnsupportedVoice:
                continue
            syntheses.append(engine.open(substitute, rate))
        return syntheses

    async def warm_up(self, language: str = "en-US") -> None:
        """Load the offline default voice ahead of the first session, so the first create
        goes active in milliseconds rather than after a model load."""
        for provider, engine in self._engines.items():
            if provider is not Provider.OFFLINE:
                continue
            try:
                await engine.open(engine.resolve_voice(language, ""), 8000).prepare()
                log.info("engine ready", extra={"provider": provider.value})
            except Exception as exc:  # a cold engine is slower, not broken
                log.warning(
                    "engine warm-up failed",
                    extra={"provider": provider.value, "error": str(exc)[:200]},
                )
