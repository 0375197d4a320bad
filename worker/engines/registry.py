"""Which engine serves which provider on this worker."""

from __future__ import annotations

import logging

from worker.engines.base import Engine, UnsupportedVoice, Voice
from worker.errors import invalid
from worker.model import Provider

log = logging.getLogger(__name__)


class EngineRegistry:
    """The providers this deployment has configured, and their engines."""

    def __init__(self, engines: dict[Provider, Engine]) -> None:
        self._engines = engines

    @property
    def configured(self) -> list[str]:
        return [p.value for p in self._engines]

    def engine_for(self, provider: Provider) -> Engine:
        engine = self._engines.get(provider)
        if engine is None:
            raise invalid(
                f"provider {provider.value} is not configured on this deployment "
                f"(no credentials); configured providers: {', '.join(self.configured)}",
                self.configured,
            )
        return engine

    def resolve(self, provider: Provider, language: str, voice_id: str) -> tuple[Engine, Voice]:
        """The engine and voice for a create, or an invalid-argument error saying why not."""
        engine = self.engine_for(provider)
        try:
            return engine, engine.resolve_voice(language, voice_id)
        except UnsupportedVoice as exc:
            raise invalid(f"provider {provider.value}: {exc}") from exc

    async def warm_up(self, language: str = "en-US") -> None:
        """Load each engine's default voice ahead of the first session, so the first
        create goes active in milliseconds rather than after a model load."""
        for provider, engine in self._engines.items():
            try:
                await engine.prepare(engine.resolve_voice(language, ""))
                log.info("engine ready", extra={"provider": provider.value})
            except Exception as exc:  # a cold engine is slower, not broken
                log.warning(
                    "engine warm-up failed",
                    extra={"provider": provider.value, "error": str(exc)[:200]},
                )
