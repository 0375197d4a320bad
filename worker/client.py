"""A client of the worker's Redis contract (docs/redis-protocol.md).

Used by the demo, the tests and the API tier: send a command, wait for its
reply, follow a session's events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.redis_retry import REDIS_OUTAGE, backoff, pool_exhausted, unblocked_by_failover
from worker.redis_text import as_text
from worker.store import COMMANDS_MAXLEN, Keys

log = logging.getLogger(__name__)

#: A sender with no reply after this long sends its command again (same id), and again
#: after twice as long, and so on until its timeout. A Sentinel failover can lose an
#: entry, or the worker's reply, with no error on either side: replication is
#: asynchronous, so a write the old primary took before it was demoted is gone.
RESEND_AFTER_S = 2.0


class CommandTimeout(Exception):
    """No worker answered in time (is a worker running for that worker id?)."""


class SpeakingClient:
    """Drive one worker's sessions through Redis."""

    def __init__(
        self,
        redis: Redis,
        worker_id: str,
        keys: Keys | None = None,
        replies: Redis | None = None,
    ) -> None:
        """``replies``: a client for the blocking reply waits, so they cannot take every
        connection of ``redis`` (the API tier gives each use its own capped pool)."""
        self.redis = redis
        self.worker_id = worker_id
        self.keys = keys or Keys()
        self._replies = replies or redis

    async def send(self, kind: str, speaking_id: str, **fields: str) -> dict[str, Any]:
        """Send a command and wait for its reply. A ``command_id`` field, if given, is
        used as the command's id (to replay a command); otherwise a new one is made."""
        return await self.command(kind, speaking_id, fields)

    async def command(
        self,
        kind: str,
        speaking_id: str,
        fields: Mapping[str, str],
        *,
        timeout_s: float = 10.0,
    ) -> dict[str, Any]:
        """Append a command to the worker's stream and wait for its reply.

        If Redis fails meanwhile (a restart, a Sentinel failover), the entry or its reply
        may be gone with the old server, so the command is sent again, same id, until
        ``timeout_s`` is spent: at once after a Redis error, and after ``RESEND_AFTER_S``
        (doubling) of silence, since a failover can lose a write without an error. The
        worker applies it once and answers each delivery (docs/redis-protocol.md).
        Raises CommandTimeout when no reply came in time."""
        command_id = fields.get("command_id") or str(uuid.uuid4())
        entry: Any = {
            **fields,
            "type": kind,
            "command_id": command_id,
            "speaking_id": speaking_id,
            # Past this the worker refuses a create/say/flush instead of applying it late
            # (e.g. replayed after a crash, long after this caller gave up).
            "expires_at": str(int((time.time() + timeout_s) * 1000)),
        }
        stream = self.keys.commands(self.worker_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        attempt = 0
        sent = False
        patience = RESEND_AFTER_S
        while True:
            try:
                if not sent:
                    await self.redis.xadd(stream, entry, maxlen=COMMANDS_MAXLEN, approximate=True)
                    sent = True
                left = max(0.1, deadline - loop.time())
                try:
                    return await self._reply(command_id, min(left, patience))
                except CommandTimeout:
                    if left <= patience:  # the whole timeout is spent
                        raise
                    # Silence: the worker may be behind, or the entry or its reply went
                    # with a demoted primary. A second delivery costs the worker a lookup.
                    log.info(
                        "no reply yet; sending the command again", extra={"command_id": command_id}
                    )
                    sent = False
                    patience *= 2
                    continue
            except Exception as exc:
                if not isinstance(exc, REDIS_OUTAGE) and not unblocked_by_failover(exc):
                    raise
                # A full pool is not a failure: what was sent stays sent (sending it again
                # to every worker of a locate is load when they are already behind).
                sent = sent and pool_exhausted(exc)
                attempt += 1
                if attempt == 1 and not sent:
                    log.warning(
                        "redis failed; sending the command again",
                        extra={"command_id": command_id, "error": type(exc).__name__},
                    )
                if loop.time() + backoff(attempt) >= deadline:
                    raise CommandTimeout(f"no reply to command {command_id}: Redis failed") from exc
                await asyncio.sleep(backoff(attempt))

    async def reply(self, command_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """Wait for the reply to a command sent earlier. Raises CommandTimeout."""
        try:
            return await self._reply(command_id, timeout_s)
        except RedisTimeoutError:  # the connection's own read timeout fired first
            raise CommandTimeout(f"no reply to command {command_id} within {timeout_s} s") from None

    async def _reply(self, command_id: str, timeout_s: float) -> dict[str, Any]:
        """Raises CommandTimeout, or a Redis error if the wait itself failed."""
        key = self.keys.reply(self.worker_id, command_id)
        popped = await self._replies.blpop([key], timeout=timeout_s)
        if popped is None:
            raise CommandTimeout(f"no reply to command {command_id} within {timeout_s} s")
        result: dict[str, Any] = json.loads(popped[1])
        return result

    async def session(self, speaking_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.session(speaking_id))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    async def events(
        self, speaking_id: str, after: str = "0", block_ms: int = 1000
    ) -> list[tuple[str, dict[str, str]]]:
        """Events of one session after stream id ``after`` (waits up to ``block_ms``)."""
        reply: Any = await self.redis.xread(
            {self.keys.session_events(speaking_id): after}, block=block_ms
        )
        out: list[tuple[str, dict[str, str]]] = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                out.append((as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()}))
        return out

    async def wait_event(
        self, speaking_id: str, kind: str, timeout_s: float = 10.0, **match: str
    ) -> dict[str, str]:
        """The first event of ``kind`` (with the given field values) in the session's stream."""
        after = "0"
        async with asyncio.timeout(timeout_s):
            while True:
                for entry_id, fields in await self.events(speaking_id, after):
                    after = entry_id
                    if fields.get("type") == kind and all(
                        fields.get(k) == v for k, v in match.items()
                    ):
                        return fields
