"""The worker's presence in Redis: the lease on its worker id, its heartbeat in the
directory, and the locks of the calls its sessions hold.

Every second: the lease (``take_lease``, a few seconds' TTL) says this process is alive
and owns the worker id, so a second process with the same id refuses to start and a
dead worker's resources can be adopted soon after it died (worker/recovery.py); the
heartbeat tells the API which worker is beside which Asterisk; each live session's call
lock gets its TTL back. When Redis comes back after an outage, sessions whose record it
lost (it restarted empty) are stored again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from worker.redis_retry import REDIS_OUTAGE, retry_through_outage
from worker.runner import SessionRunner
from worker.store import Store

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
#: A killed predecessor holds the lease until its TTL runs out: wait a little longer.
LEASE_WAIT_S = 4.0


class WorkerIdInUse(Exception):
    """Another live process holds this worker id (its lease is fresh)."""


class Presence:
    """Holds the worker id and keeps the worker's entries in Redis fresh (``run``)."""

    def __init__(
        self,
        store: Store,
        instance: str,
        info: Callable[[], dict[str, Any]],
        live: Callable[[], list[SessionRunner]],
        each_beat: Callable[[], None],
    ) -> None:
        self._store = store
        self.instance = instance
        self._info = info
        self._live = live
        self._each_beat = each_beat
        self.redis_ok = False
        self.lease_lost = False

    async def take_worker_id(self) -> None:
        """Raises WorkerIdInUse if another live process keeps the lease."""
        deadline = time.monotonic() + LEASE_WAIT_S
        while not await retry_through_outage(lambda: self._store.take_lease(self.instance)):
            if time.monotonic() > deadline:
                raise WorkerIdInUse(
                    f"worker id {self._store.worker_id} is held by another live process; "
                    "refusing to start (give each worker its own SPEAKING_WORKER_ID)"
                )
            await asyncio.sleep(0.25)
        self.redis_ok = True

    async def run(self) -> None:
        while True:
            self._each_beat()
            try:
                await self._beat()
            except REDIS_OUTAGE as exc:
                if self.redis_ok:
                    log.warning("redis unavailable", extra={"error": type(exc).__name__})
                self.redis_ok = False
            await asyncio.sleep(HEARTBEAT_S)

    async def _beat(self) -> None:
        store = self._store
        if not await store.take_lease(self.instance):
            if not self.lease_lost:
                log.error("another process took this worker id; not healthy")
            self.lease_lost = True
        await store.heartbeat(self._info())
        live = self._live()
        await store.refresh_references(
            [(r.reference_key, r.speaking_id) for r in live if r.reference_key]
        )
        if not self.redis_ok:  # back after an outage: did Redis lose our sessions?
            for runner in live:
                protocol = runner.protocol
                if protocol is not None and not await store.load(runner.speaking_id):
                    log.warning("restoring a lost session record", extra={"id": runner.speaking_id})
                    await store.save(protocol.speaking)
        self.redis_ok = True
