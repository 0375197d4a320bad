"""One session's says that are queued or playing, and their bounds (pure, no I/O).

A say is counted from when it is accepted until its segment finished, was flushed or
failed. Limits are in says and in characters (``len`` of the text), never bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import CommandError, limit

#: Accepted segment ids remembered for duplicates (oldest forgotten first). A say
#: delivered twice while the first delivery is in flight adds nothing; older replays
#: are answered from the stored reply before they get here.
RECENT_SEGMENTS = 1000
#: Recent flushes remembered with what they flushed, so a flush delivered again (its
#: stored result lost with a demoted primary, or re-sent before it was stored) is
#: answered as the first time instead of flushing says that came after it.
RECENT_FLUSHES = 32


@dataclass(frozen=True)
class Limits:
    """Bounds of one session's queue of says."""

    max_queued_says: int = 50
    max_queued_chars: int = 20_000


class SayQueue:
    """What a session has accepted and not yet played to its end."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._queued: dict[str, int] = {}  # segment id -> characters
        self._recent: dict[str, None] = {}  # accepted segment ids, oldest first
        self._flushes: dict[str, tuple[str, ...]] = {}  # flush command id -> flushed ids

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def chars(self) -> int:
        return sum(self._queued.values())

    def seen(self, segment_id: str) -> bool:
        return segment_id in self._recent

    def refusal(self, text: str) -> CommandError | None:
        """Why a say of ``text`` cannot be queued now, or None if it fits."""
        if len(self._queued) >= self.limits.max_queued_says:
            return limit(
                f"the session already has {len(self._queued)} says queued or playing; at most "
                f"{self.limits.max_queued_says} are allowed: wait for segment_finished, or flush",
                queued_says=str(len(self._queued)),
            )
        if self.chars + len(text) > self.limits.max_queued_chars:
            return limit(
                f"the session has {self.chars} characters queued or playing and this say adds "
                f"{len(text)}; at most {self.limits.max_queued_chars} are allowed: wait for "
                "segment_finished, or flush",
                queued_chars=str(self.chars),
            )
        return None

    def add(self, segment_id: str, text: str) -> None:
        self._queued[segment_id] = len(text)
        self._recent[segment_id] = None
        if len(self._recent) > RECENT_SEGMENTS:
            del self._recent[next(iter(self._recent))]

    def flushed_by(self, command_id: str) -> tuple[str, ...] | None:
        """What the flush ``command_id`` flushed, if it is a recent one."""
        return self._flushes.get(command_id)

    def flush_done(self, command_id: str, segment_ids: tuple[str, ...]) -> None:
        for segment_id in segment_ids:
            self.done(segment_id)
        self._flushes[command_id] = segment_ids
        if len(self._flushes) > RECENT_FLUSHES:
            del self._flushes[next(iter(self._flushes))]

    def done(self, segment_id: str) -> None:
        """Finished, flushed or failed: it no longer counts."""
        self._queued.pop(segment_id, None)
