"""What a session creates in Asterisk to speak into a conference.

* ARI conference: one external-media channel, added to the conference's own bridge.
  Every participant hears it; it hears the mix, which the worker never sends back.
  The worker subscribes to the bridge, so BridgeDestroyed and the last participant's
  ChannelLeftBridge reach it as events (conference.event_ends).
* ConfBridge room: the worker originates ``Local/<room>@<context>`` (``POST /channels``,
  never ``/channels/create``: see docs/media.md). The ``;1`` half enters the worker's
  app and a mixing bridge of its own with the external media; the ``;2`` half runs
  ``ConfBridge(<room>,,speaking_tts)``, a quiet, unmarked, non-admin user. ARI cannot
  watch an app_confbridge bridge (it is not subscribable), so the worker reads
  ``CONFBRIDGE_CHANNELS(parties,<room>)`` every second (worker.py) and counts the
  channels that are not our ``;2``.

Either kind is over when it is gone, or when it has held no participant but ours for
``VACANCY_GRACE_S`` (conference.Vacancy): the polls time the vacancy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from worker.ari import AriClient
from worker.conference import (
    Conference,
    ConferenceKind,
    Vacancy,
    common_owner,
    find_conference,
    native_formats,
    others_in_room,
    participants,
    read_participants,
    refusal,
)
from worker.errors import CommandError
from worker.external_media import ExternalMedia, ExternalMediaPath, all_settled
from worker.media_format import MediaFormat
from worker.resources import (
    LOCAL,
    LOCAL_PEER,
    MEDIA,
    ChannelWaiters,
)

SETUP_TIMEOUT_S = 5.0
#: The dialplan context the worker's Local channel dials (asterisk-config/extensions.conf).
DEFAULT_CONTEXT = "speaking-confbridge"


@dataclass
class ConferenceMedia(ExternalMediaPath):
    """One conference session's resources; ``teardown`` removes all of it.

    Invariant (as for calls): each resource is recorded before the request that creates
    it. ``check`` must have resolved the conference before ``setup``.
    """

    ari: AriClient
    waiters: ChannelWaiters
    session_prefix: str
    reference_id: str
    context: str = DEFAULT_CONTEXT
    conference: Conference | None = None
    media: ExternalMedia | None = None
    channels: list[str] = field(default_factory=list)
    bridge: str | None = None
    subscription: str | None = None
    vacancy: Vacancy = field(default_factory=Vacancy)

    @property
    def lock_id(self) -> str:
        return self.conference.lock_id if self.conference is not None else self.reference_id

    @property
    def polled(self) -> bool:
        """Whether the end of this conference is found by polling: always (a vacancy is
        timed by the polls; an ARI conference's BridgeDestroyed also ends it at once)."""
        return self.conference is not None

    def watched(self) -> tuple[str, ...]:
        """Event keys whose end stops the session: our channels, and the referenced
        bridge (``bridge:<id>``, for ARI conferences referenced by bridge id)."""
        prefix = self.session_prefix
        return (f"bridge:{self.reference_id}", prefix + MEDIA, prefix + LOCAL, prefix + LOCAL_PEER)

    async def check(self) -> CommandError | None:
        """Resolve the reference; why speech cannot be attached now, or None.
        Raises ARI failures if Asterisk does not answer."""
        self.conference = await find_conference(self.ari, self.reference_id)
        return refusal(self.conference, self.reference_id)

    async def native_formats(self) -> str:
        assert self.conference is not None
        formats = await read_participants(self.ari, self.conference, "CHANNEL(audionativeformat)")
        return native_formats(formats)

    async def gone(self) -> bool:
        """Whether the conference is over or our way into it was cut."""
        conference = self.conference
        if conference is None:
            return False
        for channel_id in self.channels:
            if await self.ari.get_channel(channel_id) is None:
                return True
        others: int | None
        if conference.kind is ConferenceKind.CONFBRIDGE:
            # Counted by name, not by CONFBRIDGE_INFO(parties) minus one: our ;2 is in
            # the room only once it got through the dialplan, and a count taken before
            # that read a lone participant as ours (docs/media.md).
            channels = await self.ari.get_variable(
                self.session_prefix + LOCAL_PEER,
                f"CONFBRIDGE_CHANNELS(parties,{conference.name})",
            )
            others = others_in_room(channels, f"Local/{conference.name}@{self.context}-")
        else:
            bridge = await self.ari.get_bridge(conference.bridge_id)
            others = None if bridge is None else len(participants(bridge))
        return self.vacancy.observe(time.monotonic(), others)

    async def setup(self, fmt: MediaFormat, rtp_host: str, websocket: bool) -> MediaFormat:
        """Join the conference; returns the format actually used. Raises ARI failures;
        the caller then always runs ``teardown``."""
        conference = self.conference
        assert conference is not None and conference.kind is not None, "check() first"
        prefix = self.session_prefix
        media_id, local_id = prefix + MEDIA, prefix + LOCAL
        expected = [media_id] if conference.kind is ConferenceKind.ARI else [local_id, media_id]
        arrivals = [self.waiters.expect("StasisStart", c) for c in expected]
        # Every resource is recorded before its request (ExternalMediaPath's invariant);
        # the creating requests are independent and go at once (as in call_media.py).
        self.channels.append(media_id)
        self.media = ExternalMedia(self.ari, media_id)
        requests: list[Awaitable[Any]] = [self.media.open(fmt, rtp_host, websocket)]
        if conference.kind is ConferenceKind.ARI:
            self.subscription = f"bridge:{conference.bridge_id}"
            requests.append(self.ari.subscribe(self.subscription))
        else:
            self.channels += [local_id, prefix + LOCAL_PEER]
            self.bridge = prefix
            # Only our own format: a Local channel offered everything runs at slin192,
            # and the 8 kHz -> 192 kHz -> 8 kHz path through it cost CPU and halved the
            # speech's amplitude (-6 dB measured on 22.10).
            requests.append(
                self.ari.originate(
                    f"Local/{conference.name}@{self.context}/n",
                    local_id,
                    prefix + LOCAL_PEER,
                    formats=fmt.asterisk_name,
                )
            )
            requests.append(self.ari.create_bridge(prefix, name=prefix))
        try:
            fmt = (await all_settled(*requests))[0]
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                await asyncio.gather(*arrivals)
                await self.media.started()
            if conference.kind is ConferenceKind.ARI:
                await self.ari.add_to_bridge(conference.bridge_id, media_id)
            else:
                await self.ari.add_to_bridge(prefix, local_id, media_id)
            return fmt
        finally:
            for channel_id in expected:
                self.waiters.forget("StasisStart", channel_id)

    async def teardown(self) -> None:
        """Remove every resource of ours, never the conference's own bridge: the
        external media first (it leaves the conference at once), then the Local pair
        (hanging up ;1 ends ;2 too), then our bridge. Raises TeardownIncomplete while
        Asterisk has not confirmed all of it."""
        self.channels.sort(key=lambda c: not c.endswith(MEDIA))
        await super().teardown()


async def conference_owner(ari: AriClient, reference_id: str, variable: str) -> tuple[bool, str]:
    """(found, owner) for ``locate``: the owner variable read on the participants' channels
    (conference.common_owner). Raises ARI failures."""
    conference = await find_conference(ari, reference_id)
    if conference is None or conference.kind is None:
        return False, ""
    if not variable:
        return True, ""
    return True, common_owner(await read_participants(ari, conference, variable))
