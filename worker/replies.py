"""Command replies on their way to Redis: queued without awaiting, written in batches.

Each reply is the command's stored result, the answer its sender waits for, and the
acknowledgement of its stream entry (docs/redis-protocol.md). Written one by one, a
flood of commands into one session (most of them refused) would take a Redis round trip
each and hold up every other session's answers behind it; written by one task, whatever
is queued goes in one transaction. A batch stays queued until Redis took it, so an
outage delays replies and loses none, and a crash before the write replays the commands.
"""

from __future__ import annotations

from typing import Any

from worker.metrics import Registry
from worker.store import Store
from worker.write_queue import WriteQueue

Pending = tuple[str, dict[str, Any], str]  # command id, reply body, stream entry id


class ReplyWriter(WriteQueue[Pending]):
    """The worker's queue of replies (``run`` is a supervised task)."""

    def __init__(self, store: Store, metrics: Registry) -> None:
        super().__init__(store.finish_commands)
        self._metrics = metrics

    def answer(self, command_id: str, body: dict[str, Any], entry_id: str) -> None:
        """Queue the reply to a command. Never awaits."""
        outcome = "ok" if body.get("ok") else str(body.get("error", {}).get("code", "?"))
        self._metrics.inc("speaking_commands_total", outcome=outcome)
        self.put((command_id, body, entry_id))
