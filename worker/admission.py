"""Whether this worker can take one more session: its session bound, and the offline
voices' real-time capacity.

A cloud provider's synthesis runs elsewhere, so the worker's only bound for it is
``max_sessions``. The offline voices run on this machine's CPU (piper: onnxruntime on
two threads; espeak-ng: one thread for the whole process), and past what they can
synthesize in real time every one of their sessions falls behind: each caller hears
gaps, not only the newest. So a create for an offline voice family already serving its
capacity is refused ``unavailable`` while the others are still served in full.

Pure: the worker passes what its live sessions use, this answers yes or why not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from worker.config import Settings
from worker.engines.offline import VoiceFamily, voice_family
from worker.errors import CommandError, unavailable
from worker.model import Provider

#: Where a refused offline create can go instead (the family itself is full).
_ALTERNATIVES = {
    VoiceFamily.PIPER: "use an espeak voice (voice_id espeak) or a cloud provider",
    VoiceFamily.ESPEAK: "use a cloud provider",
}


@dataclass(frozen=True, slots=True)
class Usage:
    """What one session asks of the worker: its provider and its resolved voice."""

    provider: Provider
    voice_id: str

    @property
    def offline_family(self) -> VoiceFamily | None:
        if self.provider is not Provider.OFFLINE:
            return None
        return voice_family(self.voice_id)


@dataclass(frozen=True)
class Capacity:
    """The bounds. ``offline`` maps a voice family to its sessions at once; 0 (or a family
    missing) means unbounded."""

    max_sessions: int
    offline: Mapping[VoiceFamily, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Capacity:
        offline = {
            VoiceFamily.PIPER: settings.offline_piper_sessions,
            VoiceFamily.ESPEAK: settings.offline_espeak_sessions,
        }
        return cls(settings.max_sessions, offline)


def refusal(capacity: Capacity, live: Iterable[Usage], wanted: Usage) -> CommandError | None:
    """Why a session using ``wanted`` cannot start beside the ``live`` ones, or None.

    ``live`` is every initiating or active session of this worker (sessions being torn
    down have already released their synthesis)."""
    sessions = list(live)
    if len(sessions) >= capacity.max_sessions:
        return unavailable(
            f"the speaking service is at capacity for this call's server "
            f"({capacity.max_sessions} sessions); try again later"
        )
    family = wanted.offline_family
    if family is None:
        return None
    bound = capacity.offline.get(family, 0)
    if bound <= 0:
        return None
    in_use = sum(1 for s in sessions if s.offline_family is family)
    if in_use < bound:
        return None
    return unavailable(
        f"the offline {family.value} voices serve at most {bound} sessions at once on this "
        f"call's server in real time ({in_use} in use); try again later or "
        f"{_ALTERNATIVES[family]}"
    )
