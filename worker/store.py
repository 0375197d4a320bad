"""Redis adapter: the command stream, session records, replies and events.

The key layout and message fields are the contract in docs/redis-protocol.md;
keep the two in step.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from worker.events import Event
from worker.model import Speaking

GROUP = "speaking-workers"
RESULT_TTL_S = 24 * 3600
REPLY_TTL_S = 300
EVENTS_MAXLEN = 100_000
SESSION_EVENTS_MAXLEN = 1_000
STOPPED_SESSION_TTL_S = 7 * 24 * 3600

# Deletes the reference lock only if it still names this session: a late release
# must never free a lock that another session has taken since.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Keys:
    """Every Redis key the product uses, in one place."""

    def __init__(self, prefix: str = "speaking") -> None:
        self.prefix = prefix

    def commands(self, worker_id: str) -> str:
        return f"{self.prefix}:commands:{worker_id}"

    def session(self, speaking_id: str) -> str:
        return f"{self.prefix}:session:{speaking_id}"

    def reference(self, reference_type: str, reference_id: str) -> str:
        return f"{self.prefix}:reference:{reference_type}:{reference_id}"

    def worker_sessions(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}:sessions"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def result(self, command_id: str) -> str:
        return f"{self.prefix}:result:{command_id}"

    def reply(self, command_id: str) -> str:
        return f"{self.prefix}:reply:{command_id}"

    def events(self) -> str:
        return f"{self.prefix}:events"

    def session_events(self, speaking_id: str) -> str:
        return f"{self.prefix}:events:{speaking_id}"


class Store:
    """One worker's view of Redis."""

    def __init__(self, redis: Redis, worker_id: str, keys: Keys | None = None) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.keys = keys or Keys()
        self._stream = self.keys.commands(worker_id)
        self._release = redis.register_script(_RELEASE)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_commands(
        self, *, pending: bool, block_ms: int = 1000, count: int = 64
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
                    await self.ack(_s(entry_id))
                    continue
                out.append((_s(entry_id), {_s(k): _s(v) for k, v in fields.items()}))
        return out

    async def ack(self, entry_id: str) -> None:
        await self.redis.xack(self._stream, GROUP, entry_id)

    async def result_of(self, command_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.result(command_id))
        return json.loads(raw) if raw else None

    async def finish_command(self, command_id: str, reply: dict[str, Any], entry_id: str) -> None:
        """Record the outcome, answer the sender, then acknowledge: in this order, so a
        crash before the ack replays the entry and the replay finds the stored result."""
        body = json.dumps(reply, separators=(",", ":"))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.result(command_id), body, ex=RESULT_TTL_S)
            pipe.lpush(self.keys.reply(command_id), body)
            pipe.expire(self.keys.reply(command_id), REPLY_TTL_S)
            pipe.xack(self._stream, GROUP, entry_id)
            await pipe.execute()

    async def claim_reference(self, reference_key: str, speaking_id: str) -> str | None:
        """Take the one-session-per-call lock. Returns the holder's id if someone else has it."""
        if await self.redis.set(reference_key, speaking_id, nx=True):
            return None
        holder = await self.redis.get(reference_key)
        if holder is None:  # released between our SET and GET: try once more
            return None if await self.redis.set(reference_key, speaking_id, nx=True) else "?"
        holder_id = _s(holder)
        return None if holder_id == speaking_id else holder_id

    async def release_reference(self, reference_key: str, speaking_id: str) -> None:
        await self._release(keys=[reference_key], args=[speaking_id])

    async def save(self, speaking: Speaking, **extra: str) -> None:
        key = self.keys.session(speaking.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            mapping: Any = {**speaking.to_fields(), "worker_id": self.worker_id, **extra}
            pipe.hset(key, mapping=mapping)
            if speaking.status == "stopped":
                pipe.expire(key, STOPPED_SESSION_TTL_S)
                pipe.srem(self.keys.worker_sessions(self.worker_id), speaking.id)
            else:
                pipe.sadd(self.keys.worker_sessions(self.worker_id), speaking.id)
            await pipe.execute()

    async def load(self, speaking_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.keys.session(speaking_id))
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    async def my_live_sessions(self) -> list[str]:
        return sorted(
            _s(m) for m in await self.redis.smembers(self.keys.worker_sessions(self.worker_id))
        )

    async def publish(self, event: Event) -> None:
        fields: Any = event.to_fields()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.keys.events(), fields, maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.xadd(
                self.keys.session_events(event.speaking_id),
                fields,
                maxlen=SESSION_EVENTS_MAXLEN,
                approximate=True,
            )
            pipe.expire(self.keys.session_events(event.speaking_id), STOPPED_SESSION_TTL_S)
            await pipe.execute()

    async def unregister(self) -> None:
        await self.redis.hdel(self.keys.workers(), self.worker_id)

    async def heartbeat(self, info: dict[str, Any]) -> None:
        body = json.dumps({**info, "worker_id": self.worker_id, "seen": time.time()})
        await self.redis.hset(self.keys.workers(), self.worker_id, body)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
