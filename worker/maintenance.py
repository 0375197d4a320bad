"""A worker's upkeep loops, each run (and restarted if it dies) by the supervisor:
reclaim commands left pending, trim the command stream, adopt what dead workers left
in Asterisk, and publish the cloud providers' voice lists."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Set

from redis.exceptions import ResponseError

from worker.config import Settings
from worker.engines.registry import EngineRegistry
from worker.recovery import Recovery
from worker.redis_retry import REDIS_OUTAGE
from worker.resources import ARI_FAILURES, is_ours
from worker.store import Store

log = logging.getLogger(__name__)

#: A pending entry idle this long was lost (its reply could not be written, its task died).
RECLAIM_IDLE_MS = 60_000
JANITOR_S = 2.0
#: A call's routing hint outlives a few missed rounds, not the call by much.
CALL_HINT_TTL_S = int(3 * JANITOR_S)
VOICES_REFRESH_S = 3600.0
VOICES_TTL_S = 2 * 3600
REDIS_OR_ARI: tuple[type[Exception], ...] = (*REDIS_OUTAGE, *ARI_FAILURES)


class Maintenance:
    """The upkeep of one worker. ``route`` posts a stream entry as the command reader
    would; ``in_flight`` holds the entries routed and not yet acknowledged (never
    reclaimed twice). The loops never raise on a Redis or ARI outage: they retry on
    their next round."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        recovery: Recovery,
        engines: EngineRegistry,
        route: Callable[[str, dict[str, str]], None],
        in_flight: Set[str],
    ) -> None:
        self.settings = settings
        self.store = store
        self.recovery = recovery
        self.engines = engines
        self.route = route
        self.in_flight = in_flight

    async def reclaim(self) -> None:
        """Entries left pending (a reply that could not be written, a lost task) are
        processed again; the stored result makes that harmless."""
        while True:
            await asyncio.sleep(self.settings.maintenance_interval_s)
            try:
                for entry_id, fields in await self.store.stale_entries(RECLAIM_IDLE_MS):
                    if entry_id not in self.in_flight:
                        log.warning("reclaiming a pending command", extra={"entry_id": entry_id})
                        self.route(entry_id, fields)
            except REDIS_OUTAGE:
                continue

    async def trim(self) -> None:
        while True:
            await asyncio.sleep(self.settings.maintenance_interval_s)
            try:
                await self.store.trim_commands()
            except REDIS_OUTAGE:
                continue
            except ResponseError:  # no stream or group yet (Redis restarted empty)
                continue

    async def janitor(self) -> None:
        """Adopt what dead workers of this deployment left in this Asterisk, and (with
        ``publish_calls``) name this worker as where each of its Asterisk's calls is, so
        the API routes a create without asking every worker (docs/scaling.md). One
        channel list serves both."""
        while True:
            await asyncio.sleep(JANITOR_S)
            try:
                channels = await self.recovery.ari.list_channels()
                await self.recovery.sweep(channels)
                if self.settings.publish_calls:
                    calls = [str(c.get("id", "")) for c in channels]
                    await self.store.publish_calls(
                        [c for c in calls if c and not is_ours(c)], CALL_HINT_TTL_S
                    )
            except REDIS_OR_ARI as exc:
                log.debug("sweep skipped", extra={"error": type(exc).__name__})

    async def publish_voices(self) -> None:
        """The cloud providers' own voice lists, for GET /speakings/voices (hourly)."""
        while True:
            for provider, engine in self.engines.engines().items():
                list_voices = getattr(engine, "list_voices", None)
                if list_voices is None:
                    continue
                try:
                    voices = await list_voices()
                    key = f"{self.settings.redis_prefix}:voices:{provider.value}"
                    await self.store.redis.set(key, json.dumps(voices), ex=VOICES_TTL_S)
                except Exception as exc:  # a provider's list is a nicety, never a failure
                    log.info(
                        "voice list not refreshed",
                        extra={"provider": provider.value, "error": type(exc).__name__},
                    )
            await asyncio.sleep(VOICES_REFRESH_S)
