"""Every channel of this worker's Asterisk, as ARI's events describe it: what a
``locate`` and a create's check ask about a call, answered without a request to
Asterisk.

The worker's app subscribes to all channels (``eventSource=channel:``, not
``subscribeAll``, which also takes device states: asterisk/asterisk#2170). Each channel
event carries the channel's snapshot, ``channelvars`` included (asterisk-config/ari.conf),
so the directory keeps the last snapshot of each channel and drops it on
``ChannelDestroyed``. At each (re)connection of the events websocket it is seeded from
``GET /channels`` before any event of that connection is read; events queued meanwhile
are applied after the seed, in order, so it converges on Asterisk's state.

It is authoritative only for the connection it was seeded on (its ``epoch``): a lookup
with another epoch (a reconnect not yet seeded) is "unknown", and callers ask Asterisk.
A "not here" answer can be wrong for a channel created a few milliseconds ago whose
ChannelCreated event is still on its way; a call that is Up has existed for at least a
signalling round trip, so a locate or create for an answered call is not affected.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

#: Channel fields kept: what locate and check read (the rest of a snapshot is dropped).
_KEPT = ("id", "name", "state", "channelvars")


class ChannelDirectory:
    """The channels of one Asterisk by id. Pure: fed events and listings, never raises."""

    def __init__(self) -> None:
        self._channels: dict[str, Json] = {}
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self._channels)

    def seed(self, channels: list[Json], epoch: int) -> None:
        """Start over from a full listing, valid for connection ``epoch``."""
        self._channels = {}
        for channel in channels:
            self._keep(channel)
        self._epoch = epoch

    def forget(self) -> None:
        """The events connection dropped: nothing is known until the next seed."""
        self._epoch = None
        self._channels = {}

    def apply(self, event: Json) -> None:
        """Take one ARI event into account (events without a channel are ignored)."""
        channel = event.get("channel")
        if not isinstance(channel, dict) or self._epoch is None:
            return
        if event.get("type") == "ChannelDestroyed":
            self._channels.pop(str(channel.get("id", "")), None)
        else:
            self._keep(channel)

    def lookup(self, channel_id: str, epoch: int) -> tuple[bool, Json | None]:
        """(known, channel): known is False when the directory cannot say (not seeded
        for ``epoch``); then channel is None and the caller asks Asterisk."""
        if self._epoch is None or self._epoch != epoch:
            return False, None
        return True, self._channels.get(channel_id)

    def _keep(self, channel: Json) -> None:
        channel_id = str(channel.get("id", ""))
        if channel_id:
            self._channels[channel_id] = {k: channel[k] for k in _KEPT if k in channel}
