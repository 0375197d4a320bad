"""Which workers are alive, and which one's Asterisk holds a given call.

Workers announce themselves every second in ``speaking:workers``. To route a create the
API asks the worker that last named itself as where the call is
(``speaking:where:call:<id>``, published every 2 s from each worker's channel list); if
there is no such hint, or that worker does not find the call, it asks every other live
worker at once (a ``locate`` command) and picks the one whose Asterisk has the channel.
The hint saves asking W workers; the answer still comes from a worker that looked.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from worker.api.pools import RedisPools
from worker.client import CommandTimeout, SpeakingClient
from worker.redis_text import as_text
from worker.store import Keys

LOCATE_TIMEOUT_S = 3.0


class Unreachable(Exception):
    """No worker found the reference, and at least one could not look (Asterisk down)."""


@dataclass(frozen=True)
class Located:
    """Where a call lives: the worker, the channel's state and its owner."""

    worker_id: str
    state: str
    owner: str
    #: The reference as that worker's Asterisk spells it ("" if it did not say).
    reference_id: str = ""


class WorkerDirectory:
    """The live workers, read from their heartbeats."""

    def __init__(self, pools: RedisPools, keys: Keys, stale_s: float) -> None:
        self._pools = pools
        self._redis = pools.main
        self._keys = keys
        self._stale_s = stale_s

    async def live(self) -> dict[str, dict[str, Any]]:
        raw = await self._redis.hgetall(self._keys.workers())
        now = time.time()
        workers: dict[str, dict[str, Any]] = {}
        for worker_id, body in raw.items():
            info = json.loads(body)
            if self._fresh(info, now):
                workers[as_text(worker_id)] = info
        return workers

    async def is_live(self, worker_id: str) -> bool:
        """One worker's heartbeat is fresh (one HGET, whatever the number of workers)."""
        body = await self._redis.hget(self._keys.workers(), worker_id)
        return body is not None and self._fresh(json.loads(body), time.time())

    def _fresh(self, info: dict[str, Any], now: float) -> bool:
        return now - float(info.get("seen", 0)) <= self._stale_s

    async def providers(self) -> list[str]:
        """Providers configured on at least one live worker."""
        found: set[str] = set()
        for info in (await self.live()).values():
            found.update(info.get("providers", []))
        return sorted(found)

    async def locate(self, reference_type: str, reference_id: str) -> Located | None:
        """The worker whose Asterisk holds the reference; None if none does.

        Raises Unreachable if none does but some worker could not tell.
        """
        unsure = False
        hinted = ""
        if reference_type == "call":
            hint = await self._redis.get(self._keys.call_location(reference_id))
            hinted = as_text(hint) if hint is not None else ""
            if hinted and await self.is_live(hinted):
                answer = await self._ask(hinted, reference_type, reference_id)
                if answer.get("found"):
                    return _located(hinted, answer)
                unsure = not answer.get("ok")
            else:
                hinted = ""
        # No hint, or its worker did not find the call: everyone else is asked.
        workers = [w for w in await self.live() if w != hinted]
        replies = await asyncio.gather(
            *(self._ask(w, reference_type, reference_id) for w in workers), return_exceptions=True
        )
        for worker_id, reply in zip(workers, replies, strict=True):
            if isinstance(reply, dict) and reply.get("found"):
                return _located(worker_id, reply)
            unsure = unsure or not (isinstance(reply, dict) and reply.get("ok"))
        if unsure:
            raise Unreachable(reference_id)
        return None

    async def _ask(self, worker_id: str, reference_type: str, reference_id: str) -> dict[str, Any]:
        client = SpeakingClient(self._redis, worker_id, self._keys, replies=self._pools.replies)
        try:
            return await client.command(
                "locate",
                str(uuid.uuid4()),
                {"reference_type": reference_type, "reference_id": reference_id},
                timeout_s=LOCATE_TIMEOUT_S,
            )
        except CommandTimeout:
            return {"ok": False, "found": False}


def _located(worker_id: str, reply: dict[str, Any]) -> Located:
    return Located(
        worker_id,
        str(reply.get("state", "")),
        str(reply.get("owner", "")),
        str(reply.get("reference_id", "")),
    )
