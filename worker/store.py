"""Redis adapter: the command stream, session records, replies and events.

The key layout and message fields are the contract in docs/redis-protocol.md;
keep the two in step.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from worker.events import Event
from worker.model import Speaking, Status
from worker.redis_text import as_text

GROUP = "speaking-workers"
RESULT_TTL_S = 24 * 3600
REPLY_TTL_S = 300
EVENTS_MAXLEN = 100_000  # over all shards of the deployment-wide stream
MAX_EVENT_SHARDS = 1024
SESSION_EVENTS_MAXLEN = 1_000
#: Senders cap the command stream at about this many entries; the worker also trims
#: what it has acknowledged (``trim_commands``).
COMMANDS_MAXLEN = 100_000
STOPPED_SESSION_TTL_S = 7 * 24 * 3600
#: A call's lock outlives a dead owner by at most this long; the owner's heartbeat
#: refreshes it every second.
LOCK_TTL_MS = 30_000
#: A worker id is held by one live process: its lease lapses this long after it died.
LEASE_TTL_MS = 3_000

# Deletes the reference lock only if it still names this session: a late release
# must never free a lock that another session has taken since.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Refreshes a lock we hold, or takes it again if it vanished (Redis restarted empty).
# 1: ours; 0: another session holds it.
_REFRESH = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class Keys:
    """Every Redis key the product uses, in one place.

    Redis Cluster: a transaction and a multi-key command must stay in one hash slot. The
    only transaction over several keys is a worker's ``finish_commands`` (the command
    stream, each command's result and reply), so those three carry the worker id as a
    hash tag (``{...}``) and land in the worker's slot. Every other write touches one key
    per command. Raises ValueError for a prefix with braces (it would become the tag)."""

    def __init__(self, prefix: str = "speaking", event_shards: int = 1) -> None:
        """Raises ValueError for a prefix with braces or event_shards outside 1-1024."""
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix may not contain braces, got {prefix!r}")
        if not 1 <= event_shards <= MAX_EVENT_SHARDS:
            raise ValueError(
                f"event shards (SPEAKING_EVENT_SHARDS) must be 1 to {MAX_EVENT_SHARDS}, "
                f"got {event_shards}"
            )
        self.prefix = prefix
        self.event_shards = event_shards

    def commands(self, worker_id: str) -> str:
        return f"{self.prefix}:commands:{{{worker_id}}}"

    def session(self, speaking_id: str) -> str:
        return f"{self.prefix}:session:{speaking_id}"

    def reference(self, reference_type: str, reference_id: str) -> str:
        return f"{self.prefix}:reference:{reference_type}:{reference_id}"

    def lease(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}:lease"

    def worker_sessions(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}:sessions"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def result(self, worker_id: str, command_id: str) -> str:
        return f"{self.prefix}:result:{{{worker_id}}}:{command_id}"

    def reply(self, worker_id: str, command_id: str) -> str:
        return f"{self.prefix}:reply:{{{worker_id}}}:{command_id}"

    def events(self) -> str:
        return f"{self.prefix}:events"

    def call_location(self, channel_id: str) -> str:
        """Which worker's Asterisk holds a channel (a routing hint; docs/scaling.md)."""
        return f"{self.prefix}:where:call:{channel_id}"

    def events_of(self, speaking_id: str) -> str:
        """The deployment-wide stream a session's events go to: ``events()`` itself, or
        with shards, ``<prefix>:events:{s<k>}`` for k = crc32(id) mod shards, so one
        session's events stay in order on one stream and the shards spread over a
        cluster's slots (one global stream is one hot key: docs/scaling.md)."""
        if self.event_shards == 1:
            return self.events()
        return self._event_shard(zlib.crc32(speaking_id.encode()) % self.event_shards)

    def event_streams(self) -> list[str]:
        """Every deployment-wide event stream, for a consumer that follows them all."""
        if self.event_shards == 1:
            return [self.events()]
        return [self._event_shard(k) for k in range(self.event_shards)]

    def _event_shard(self, k: int) -> str:
        return f"{self.prefix}:events:{{s{k}}}"

    def session_events(self, speaking_id: str) -> str:
        return f"{self.prefix}:events:{speaking_id}"


class Store:
    """One worker's view of Redis."""

    def __init__(self, redis: Redis, worker_id: str, keys: Keys | None = None) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.keys = keys or Keys()
        self._stream = self.keys.commands(worker_id)
        self._events_maxlen = max(1000, EVENTS_MAXLEN // self.keys.event_shards)
        self._release = redis.register_script(_RELEASE)
        self._refresh = redis.register_script(_REFRESH)
        #: Called with each entry id once it is acknowledged (the worker's in-flight set).
        self.on_acked: Callable[[str], None] = lambda _entry_id: None

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_commands(
        self, *, pending: bool, block_ms: int = 1000, count: int = 256
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries for this worker: its own unacknowledged ones first (``pending``), then new."""
        reply: Any = await self.redis.xreadgroup(
            GROUP,
            self.worker_id,
            {self._stream: "0" if pending else ">"},
            count=count,
            block=None if pending else block_ms,
        )
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                if fields is None:  # pending entry trimmed away meanwhile
                    await self.ack(as_text(entry_id))
                    continue
                out.append((as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()}))
        return out

    async def ack(self, entry_id: str) -> None:
        await self.redis.xack(self._stream, GROUP, entry_id)
        self.on_acked(entry_id)

    async def stale_entries(
        self, min_idle_ms: int, count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        """Our pending entries unacknowledged for ``min_idle_ms`` (to process again)."""
        reply: Any = await self.redis.xautoclaim(
            self._stream, GROUP, self.worker_id, min_idle_ms, start_id="0-0", count=count
        )
        out: list[tuple[str, dict[str, str]]] = []
        for entry_id, fields in reply[1]:
            if fields is None:
                await self.ack(as_text(entry_id))
            else:
                out.append((as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()}))
        return out

    async def trim_commands(self) -> None:
        """Drop the stream entries before the oldest one still pending (or not yet read)."""
        summary: Any = await self.redis.xpending(self._stream, GROUP)
        if summary and summary.get("pending"):
            oldest = as_text(summary["min"])
        else:
            groups: Any = await self.redis.xinfo_groups(self._stream)
            ours = [g for g in groups if as_text(g["name"]) == GROUP]
            if not ours:
                return
            last = as_text(ours[0]["last-delivered-id"])
            millis, seq = (int(x) for x in last.split("-"))
            oldest = f"{millis}-{seq + 1}"
        await self.redis.xtrim(self._stream, minid=oldest, approximate=False)

    async def result_of(self, command_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.result(self.worker_id, command_id))
        return json.loads(raw) if raw else None

    async def finish_command(self, command_id: str, reply: dict[str, Any], entry_id: str) -> None:
        """Record the outcome, answer the sender, then acknowledge (see finish_commands)."""
        await self.finish_commands([(command_id, reply, entry_id)])

    async def finish_commands(self, batch: list[tuple[str, dict[str, Any], str]]) -> None:
        """For each (command id, reply, entry id): record the outcome, answer the sender,
        acknowledge the entry; all in one transaction, so a crash before it replays the
        entries and each replay finds its stored result."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for command_id, reply, entry_id in batch:
                body = json.dumps(reply, separators=(",", ":"))
                reply_key = self.keys.reply(self.worker_id, command_id)
                pipe.set(self.keys.result(self.worker_id, command_id), body, ex=RESULT_TTL_S)
                pipe.lpush(reply_key, body)
                pipe.expire(reply_key, REPLY_TTL_S)
                pipe.xack(self._stream, GROUP, entry_id)
            await pipe.execute()
        for _command_id, _reply, entry_id in batch:
            self.on_acked(entry_id)

    async def claim_reference(self, reference_key: str, speaking_id: str) -> str | None:
        """Take the one-session-per-call lock. Returns the holder's id if someone else has it."""
        if await self.redis.set(reference_key, speaking_id, nx=True, px=LOCK_TTL_MS):
            return None
        holder = await self.redis.get(reference_key)
        if holder is None:  # released between our SET and GET: try once more
            taken = await self.redis.set(reference_key, speaking_id, nx=True, px=LOCK_TTL_MS)
            return None if taken else "?"
        holder_id = as_text(holder)
        return None if holder_id == speaking_id else holder_id

    async def refresh_references(self, held: list[tuple[str, str]]) -> None:
        """Extend the locks (reference key, speaking id) our live sessions hold."""
        # EVAL with the script's text, not EVALSHA: a cluster pipeline sends each call to
        # the key's node, which may never have loaded the script.
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, speaking_id in held:
                pipe.eval(_REFRESH, 1, key, speaking_id, LOCK_TTL_MS)
            await pipe.execute()

    async def release_reference(self, reference_key: str, speaking_id: str) -> None:
        await self._release(keys=[reference_key], args=[speaking_id])

    async def save(self, speaking: Speaking, **extra: str) -> None:
        """Write the session's record and keep the worker's set of live sessions in step.

        The record and the set live in different hash slots (Redis Cluster), so they are
        two writes, ordered so that a crash between them leaves the set a superset of the
        live sessions, never missing one: a live session joins the set before its record
        is written, a stopped one leaves it after. Recovery checks each member's record
        (worker/recovery.py), so an extra member costs a lookup and nothing else."""
        key = self.keys.session(speaking.id)
        mapping: Any = {**speaking.to_fields(), "worker_id": self.worker_id, **extra}
        live = self.keys.worker_sessions(self.worker_id)
        if speaking.status is Status.STOPPED:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)
                pipe.expire(key, STOPPED_SESSION_TTL_S)
                await pipe.execute()
            await self.redis.srem(live, speaking.id)
        else:
            await self.redis.sadd(live, speaking.id)
            await self.redis.hset(key, mapping=mapping)

    async def load(self, speaking_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.keys.session(speaking_id))
        return {as_text(k): as_text(v) for k, v in raw.items()} if raw else None

    async def forget_session(self, worker_id: str, speaking_id: str) -> None:
        """Remove a session from a worker's set of live sessions."""
        await self.redis.srem(self.keys.worker_sessions(worker_id), speaking_id)

    async def my_live_sessions(self) -> list[str]:
        return await self.live_sessions_of(self.worker_id)

    async def live_sessions_of(self, worker_id: str) -> list[str]:
        return sorted(
            as_text(m) for m in await self.redis.smembers(self.keys.worker_sessions(worker_id))
        )

    async def publish(self, events: list[Event]) -> None:
        """Append events, in order, to the global stream and to each session's own."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                fields: Any = event.to_fields()
                session = self.keys.session_events(event.speaking_id)
                every = self.keys.events_of(event.speaking_id)
                pipe.xadd(every, fields, maxlen=self._events_maxlen, approximate=True)
                pipe.xadd(session, fields, maxlen=SESSION_EVENTS_MAXLEN, approximate=True)
                pipe.expire(session, STOPPED_SESSION_TTL_S)
            await pipe.execute()

    async def unregister(self, instance: str) -> None:
        """Leave the directory and give the worker id back (a clean shutdown)."""
        await self.redis.hdel(self.keys.workers(), self.worker_id)
        await self._release(keys=[self.keys.lease(self.worker_id)], args=[instance])

    async def take_lease(self, instance: str) -> bool:
        """Hold (or keep holding) this worker id for ``instance``; False if another live
        process holds it."""
        return bool(
            await self._refresh(
                keys=[self.keys.lease(self.worker_id)], args=[instance, LEASE_TTL_MS]
            )
        )

    async def lease_holder(self, worker_id: str) -> str | None:
        """The instance holding ``worker_id``'s lease, or None if that worker is dead."""
        raw = await self.redis.get(self.keys.lease(worker_id))
        return as_text(raw) if raw is not None else None

    async def heartbeat(self, info: dict[str, Any]) -> None:
        body = json.dumps({**info, "worker_id": self.worker_id, "seen": time.time()})
        await self.redis.hset(self.keys.workers(), self.worker_id, body)

    async def publish_calls(self, channel_ids: list[str], ttl_s: int) -> None:
        """Name this worker as where each channel is, for ``ttl_s`` (refreshed sooner)."""
        if not channel_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for channel_id in channel_ids:
                pipe.set(self.keys.call_location(channel_id), self.worker_id, ex=ttl_s)
            await pipe.execute()

    async def forget_worker(self, worker_id: str) -> None:
        """Drop a long-dead worker's heartbeat from the directory."""
        await self.redis.hdel(self.keys.workers(), worker_id)

    async def workers(self) -> dict[str, dict[str, Any]]:
        """Every worker's last heartbeat, live or not."""
        raw = await self.redis.hgetall(self.keys.workers())
        return {as_text(k): json.loads(v) for k, v in raw.items()}
