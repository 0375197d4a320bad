"""What a conference reference names, and when a conference counts as over.

Two kinds of conference can be referenced (``reference_type=confbridge``):

* an **ARI conference**: a mixing bridge held by a Stasis application (how conference
  services built on ARI make conferences). The worker adds its external media to it.
* a **dialplan conference**: an ``app_confbridge`` room (``ConfBridge(name)``). ARI cannot
  add channels to its bridge, so the worker joins it through a Local channel pair
  (worker/conference_media.py).

How a reference is resolved, in this order:

1. ``GET /bridges/{reference_id}``: a Stasis mixing bridge is an ARI conference; the
   bridge of an app_confbridge room (creator ``ConfBridge``) is that room;
2. otherwise the app_confbridge room *named* ``reference_id`` (its bridge's ``name``).

Any other bridge (a two-party call's, a holding bridge, one of ours) is not a
conference. The participants are the bridge's channels that are not a speaking
worker's; a conference is over when its bridge is gone, or when no participant has been
left for ``VACANCY_GRACE_S`` (Vacancy).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from worker.ari import AriClient
from worker.errors import CommandError, ErrorCode, conflict
from worker.resources import is_ours

Json = dict[str, Any]

#: A room name that can be dialled as Local/<name>@<context> (no '@', '/', ',' ...).
_DIALLABLE = re.compile(r"^[A-Za-z0-9_.+-]{1,80}$")
#: At most this many participants are asked for their owner and codec.
PARTICIPANTS_READ = 16


class ConferenceKind(enum.Enum):
    ARI = "ari"  # a Stasis application's mixing bridge
    CONFBRIDGE = "confbridge"  # an app_confbridge room


@dataclass(frozen=True)
class Conference:
    """A resolved reference. ``kind`` None: a bridge that is not a conference."""

    kind: ConferenceKind | None
    bridge_id: str
    name: str
    participants: tuple[str, ...]

    @property
    def lock_id(self) -> str:
        """One id per conference however it was referenced: the room name of a
        ConfBridge (by name or by bridge id), the bridge id of an ARI conference."""
        return self.name if self.kind is ConferenceKind.CONFBRIDGE else self.bridge_id


def kind_of(bridge: Json) -> ConferenceKind | None:
    if bridge.get("creator") == "ConfBridge":
        return ConferenceKind.CONFBRIDGE
    if bridge.get("bridge_class") == "stasis" and bridge.get("bridge_type") == "mixing":
        return ConferenceKind.ARI
    return None


def participants(bridge: Json) -> tuple[str, ...]:
    """The bridge's channels that are not a speaking worker's own."""
    return tuple(c for c in bridge.get("channels", []) if not is_ours(str(c)))


def from_bridge(bridge: Json) -> Conference:
    bridge_id = str(bridge.get("id", ""))
    if is_ours(bridge_id):  # a session's own bridge is never a conference
        return Conference(None, bridge_id, "", ())
    return Conference(kind_of(bridge), bridge_id, str(bridge.get("name", "")), participants(bridge))


def refusal(conference: Conference | None, reference_id: str) -> CommandError | None:
    """Why speech cannot be attached to this conference now, or None."""
    if conference is None:
        return CommandError(ErrorCode.NOT_FOUND, f"conference {reference_id} does not exist here")
    if conference.kind is None:
        return conflict(
            f"bridge {reference_id} is not a conference: a conference is a mixing bridge "
            "held by a Stasis application or an app_confbridge room"
        )
    if conference.kind is ConferenceKind.CONFBRIDGE and not _DIALLABLE.match(conference.name):
        return conflict(
            f"conference {conference.name[:80]!r} cannot be joined: its name must be 1 to 80 "
            "letters, digits or . _ + -"
        )
    if not conference.participants:
        return conflict(
            f"conference {reference_id} has no participant; at least one participant must "
            "have joined before speech is attached"
        )
    return None


#: How long a conference may hold no participant but ours before it counts as ended.
VACANCY_GRACE_S = 2.0


@dataclass
class Vacancy:
    """Whether a conference has ended, from what successive looks at it found.

    A conference ends when it is gone (its bridge destroyed), or when it has held no
    participant other than ours for ``grace_s`` on end. One look at an empty room is a
    moment, not a fact: a participant stepping out and back in (an ARI application
    moving it between bridges, a transfer) must not end the session, and a look can
    miss a participant (docs/media.md: the spurious ``conference_ended``)."""

    grace_s: float = VACANCY_GRACE_S
    since: float | None = None  # when the current vacancy was first seen

    def observe(self, now: float, others: int | None) -> bool:
        """One look at ``now`` (monotonic seconds): ``others`` participants besides ours,
        or None when the conference is gone. Returns whether it has ended."""
        if others is None:
            return True
        if others > 0:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.grace_s


def others_in_room(channels: str | None, ours: str) -> int:
    """Participants of a ConfBridge room besides ours, from ``CONFBRIDGE_CHANNELS``'s
    comma-separated channel names (None or empty: nobody). ``ours`` is the name prefix
    of the worker's Local channel into the room, ``Local/<room>@<context>-``."""
    names = [n for n in (channels or "").split(",") if n.strip()]
    return sum(not n.strip().startswith(ours) for n in names)


def event_ends(event: Json) -> bool:
    """Whether a bridge event says the conference is over at once (for an ARI conference,
    whose bridge the worker subscribes to): only its bridge being destroyed. The last
    participant leaving starts a vacancy, which the worker's poll times (Vacancy)."""
    return event.get("type") == "BridgeDestroyed"


async def find_conference(ari: AriClient, reference_id: str) -> Conference | None:
    """Resolve a reference (see the module docstring for the order); None if nothing by
    that id or name exists. Raises ARI failures (worker/resources.py: ARI_FAILURES)."""
    bridge = await ari.get_bridge(reference_id)
    if bridge is not None:
        return from_bridge(bridge)
    for candidate in await ari.list_bridges():
        if (
            candidate.get("name") == reference_id
            and kind_of(candidate) is ConferenceKind.CONFBRIDGE
        ):
            return from_bridge(candidate)
    return None


async def read_participants(ari: AriClient, conference: Conference, variable: str) -> list[str]:
    """A channel variable (or function) of up to PARTICIPANTS_READ participants;
    channels that left meanwhile are skipped."""
    values = []
    for channel_id in conference.participants[:PARTICIPANTS_READ]:
        value = await ari.get_variable(channel_id, variable)
        if value is not None:
            values.append(value)
    return values


def common_owner(owners: list[str]) -> str:
    """The conference's owner: the one owner every participant's call carries. A
    participant without one, or two different owners, make the conference nobody's (a
    tenancy check then finds it for no customer): one tagged caller in a room of
    untagged ones does not make the room that caller's customer's."""
    found = set(owners)
    return found.pop() if len(found) == 1 else ""


def native_formats(formats: list[str]) -> str:
    """All participants' native formats as one ``(a|b)`` list: a conference is wideband
    if any participant is (the mixer then runs at 16 kHz or more)."""
    names = [n for f in formats for n in f.strip("() ").split("|") if n]
    return "(" + "|".join(names) + ")"
