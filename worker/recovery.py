"""After a crash: stop the sessions a dead worker left, and remove what it left in Asterisk.

Sessions cannot be resumed: their audio sockets died with the process. So a dead
worker's sessions are stopped with reason ``worker_lost`` and their channels and
bridges removed. Two cases:

* this worker's own previous life (same worker id, restarted): at start-up;
* another worker of the same deployment beside the same Asterisk that died for good
  (a container recreated under a new worker id): the janitor notices its resources in
  Asterisk, checks that its lease lapsed, and adopts them. It runs periodically because
  a lease lapses a few seconds after the death. Sessions such a worker left with
  nothing in this Asterisk (its Asterisk restarted too, or it ran beside another one)
  are stopped by whichever live worker of the deployment notices first: otherwise they
  would stay ``active`` for good, and every command to them would wait for a reply
  that never comes.

Only resources whose tag (worker/resources.py) is known are touched: this worker's,
or a dead worker's listed in this deployment's directory. Another deployment sharing
the Asterisk keeps its channels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.ari import AriClient
from worker.events import Event, EventType
from worker.model import Speaking, Status, StopReason, timestamp
from worker.resources import ChannelWaiters, destroy_bridge, destroy_channel, parse_resource
from worker.store import Store

log = logging.getLogger(__name__)

#: A heartbeat younger than this is a live worker's; older, its lease decides.
FRESH_HEARTBEAT_S = 2.0
#: A worker dead this long is dropped from the directory (``speaking:workers``).
FORGET_AFTER_S = 24 * 3600.0


def _seen(info: dict[str, object]) -> float:
    seen = info.get("seen")
    return float(seen) if isinstance(seen, int | float) else 0.0


@dataclass
class Recovery:
    """Finds and ends what dead workers left (``at_start``, then ``sweep`` periodically)."""

    store: Store
    ari: AriClient
    waiters: ChannelWaiters
    tag: str
    emit: Callable[[Event], None]
    #: Whether this worker runs a session id now (its resources are never swept).
    is_running: Callable[[str], bool]

    async def at_start(self) -> int:
        """Stop the sessions this worker id owned before it restarted; then sweep."""
        for speaking_id in await self.store.my_live_sessions():
            await self._lose(speaking_id, self.store.worker_id)
        return await self.sweep()

    async def sweep(self, channels: list[dict[str, object]] | None = None) -> int:
        """Remove resources of ours whose session is not live here, and adopt those of
        dead workers of this deployment. ``channels``: Asterisk's channel list, if the
        caller has just read it. Returns how many resources were removed."""
        dead = await self._dead_tags()
        if channels is None:
            channels = await self.ari.list_channels()
        found = [("channel", str(c.get("id", ""))) for c in channels]
        found += [("bridge", str(b.get("id", ""))) for b in await self.ari.list_bridges()]
        doomed: list[tuple[str, str]] = []
        lost: dict[str, str] = {}  # speaking id -> the worker that ran it
        for kind, resource_id in found:
            orphan = self._orphan(resource_id, dead)
            if orphan is not None:
                doomed.append((kind, resource_id))
                lost[orphan[0]] = orphan[1]
        # A dead worker's sessions that left nothing here (its Asterisk restarted, or it
        # ran beside another one) are lost too: their audio died with the process.
        for tag, owner in dead.items():
            if tag != self.tag:
                for speaking_id in await self.store.live_sessions_of(owner):
                    lost.setdefault(speaking_id, owner)
        for speaking_id, owner in lost.items():  # stopped first: none is left active
            await self._lose(speaking_id, owner)
        removed = 0
        for kind, resource_id in doomed:
            if kind == "channel":
                removed += await destroy_channel(self.ari, self.waiters, resource_id)
            else:
                removed += await destroy_bridge(self.ari, self.waiters, resource_id)
        if removed:
            log.warning("removed leftovers of dead workers", extra={"count": removed})
        return removed

    def _orphan(self, resource_id: str, dead: dict[str, str]) -> tuple[str, str] | None:
        """(speaking id, owner) of a resource to remove, or None to leave it alone."""
        parsed = parse_resource(resource_id)
        if parsed is None or parsed[0] not in dead:
            return None
        tag, speaking_id = parsed
        if tag == self.tag and self.is_running(speaking_id):
            return None
        return speaking_id, dead[tag]

    async def _dead_tags(self) -> dict[str, str]:
        """Tags of this deployment's other workers whose lease lapsed -> their worker id.

        Only a worker whose heartbeat is older than ``FRESH_HEARTBEAT_S`` has its lease
        read: every worker sweeps every 2 s, so reading every lease would cost the
        deployment W x (W - 1) / 2 reads a second (half a million at 1,000 workers). A
        heartbeat is written each second beside the lease refresh, and the bound is
        under the lease's 3 s, so a death is seen as soon as before; a clock ahead on
        the dead worker's machine delays it by that much."""
        dead: dict[str, str] = {self.tag: self.store.worker_id}
        now = time.time()
        for worker_id, info in (await self.store.workers()).items():
            tag = str(info.get("tag", ""))
            if worker_id == self.store.worker_id or not tag:
                continue
            silent_s = now - _seen(info)
            if silent_s < FRESH_HEARTBEAT_S:
                continue
            if await self.store.lease_holder(worker_id) is None:
                dead[tag] = worker_id
                if silent_s > FORGET_AFTER_S:
                    # Long dead: swept many times over (this round still sweeps it), so
                    # it leaves the directory rather than cost every sweep a read forever.
                    await self.store.forget_worker(worker_id)
        return dead

    async def _lose(self, speaking_id: str, owner: str) -> None:
        """Mark a dead worker's session stopped (worker_lost) and free its call. A member
        of the owner's set without a live record of the owner's (it died between the two
        writes of Store.save) is only dropped from the set."""
        record = await self.store.load(speaking_id)
        if record is None or record.get("worker_id") != owner:
            await self.store.forget_session(owner, speaking_id)
            return
        speaking = Speaking.from_fields(record)
        if speaking.status is not Status.STOPPED:
            speaking.status = Status.STOPPED
            speaking.tm_update = timestamp()
            await self.store.save(
                speaking, stop_reason=StopReason.WORKER_LOST.value, worker_id=owner
            )
            lock_id = record.get("reference_lock") or speaking.reference_id
            key = self.store.keys.reference(speaking.reference_type.value, lock_id)
            await self.store.release_reference(key, speaking_id)
            self.emit(Event(EventType.SPEAKING_STOPPED, speaking_id, {"reason": "worker_lost"}))
        await self.store.forget_session(owner, speaking_id)
