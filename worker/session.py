"""The lifecycle of one speaking session, as a plain state machine.

    initiating --(media and engine ready)--> active --(stop/delete/hangup/...)--> stopped
    initiating --(setup failed, hangup, stop, delete)----------------------------> stopped

``stopped`` is final. Delete additionally stamps ``tm_delete``. Every method either
changes the state and returns, or raises ``CommandError`` and changes nothing.
"""

from __future__ import annotations

from worker.errors import CommandError, ErrorCode, conflict
from worker.model import NEVER, Speaking, Status, StopReason, timestamp


class SessionState:
    """Status transitions for one session, with the reason it stopped."""

    def __init__(self, speaking: Speaking) -> None:
        self.speaking = speaking
        self.stop_reason: StopReason | None = None

    @property
    def status(self) -> Status:
        return Status(self.speaking.status)

    @property
    def deleted(self) -> bool:
        return self.speaking.tm_delete != NEVER

    def _touch(self) -> str:
        now = timestamp()
        self.speaking.tm_update = now
        return now

    def activate(self) -> bool:
        """Setup finished. False if the session was stopped meanwhile (e.g. hangup)."""
        if self.status is not Status.INITIATING:
            return False
        self.speaking.status = Status.ACTIVE.value
        self._touch()
        return True

    def require_active(self, action: str) -> None:
        """Refuse ``action`` (say, flush) unless the session is active."""
        if self.deleted:
            raise CommandError(ErrorCode.NOT_FOUND, f"speaking {self.speaking.id} was deleted")
        if self.status is Status.INITIATING:
            raise conflict(
                f"cannot {action}: the session is still initiating; wait until status is active",
                status=self.status.value,
            )
        if self.status is Status.STOPPED:
            raise conflict(
                f"cannot {action}: the session is stopped"
                + (f" ({self.stop_reason.value})" if self.stop_reason else ""),
                status=self.status.value,
            )

    def stop(self, reason: StopReason) -> bool:
        """Move to stopped. Idempotent: False when it already was stopped."""
        if self.status is Status.STOPPED:
            return False
        self.speaking.status = Status.STOPPED.value
        self.stop_reason = reason
        self._touch()
        return True

    def delete(self) -> bool:
        """Stop if needed and stamp tm_delete. Idempotent: False when already deleted."""
        if self.deleted:
            return False
        self.stop(StopReason.DELETE)
        self.speaking.tm_delete = self._touch()
        return True
