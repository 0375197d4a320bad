"""Real conferences for the tests: SIPp participants in a dialplan ConfBridge room or in
an ARI conference held by a conference service of our own.

    async with Conference(kind="confbridge", events=harness_events, workdir=tmp) as conf:
        alice, bob = await conf.join(), await conf.join()
        ...  # speak into conf.reference
        loud = count_loud(alice.received())

Each participant is one SIPp UAC dialling ``conf-<room>`` (ConfBridge, quiet profiles of
asterisk-config/confbridge.conf) or ``ari-<room>`` (``Stasis(conference-service,<room>)``),
sending quiet noise plus a steady *marker tone* of its own frequency (-45 dBFS, below the
speech threshold), so who hears whom is told by frequency: ``hears(other)``. tcpdump
records what reaches each participant's media port.

``ConferenceService`` plays the conference service built on ARI: a long-lived app
(never one per test, see ari.py) that puts every channel entering it into the mixing
bridge named by its argument, created on first use with the room as its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .analysis import SPEECH_THRESHOLD_DBFS, level_dbfs, tone_dbfs
from .ari import Ari, AriError, AriEvents, Json
from .capture import RtpCapture, RtpPacket
from .media import CODECS, CodecName
from .rtp_pcap import write_rtp_pcap
from .sipp_process import SippProcess, pick_ports

Kind = Literal["confbridge", "ari"]
SERVICE_APP = "conference-service"
#: One marker frequency per participant, 400 Hz apart (>= 2 DFT bins at 20 ms frames).
MARKER_HZ = (2300.0, 2700.0, 3100.0, 3500.0, 1900.0)
MARKER_DBFS = -45.0
#: A frame "carries" a marker when its component is within this of the sent level
#: (mixing two quiet parties and G.711 move it by a few dB at most).
MARKER_HEARD_DBFS = MARKER_DBFS - 8.0
#: Frames at most this loud carry no speech, not even a syllable's tail (whose spectrum
#: could pass for a marker): two markers and the noise sum to about -42 dBFS.
MARKERS_ONLY_DBFS = -40.0
PCAP_SLACK_S = 30.0


class ConferenceService:
    """The ARI conference service: bridge ``<room>`` per room, channels added on entry."""

    def __init__(self, ari: Ari) -> None:
        self.ari = ari
        self.events: AriEvents | None = None
        self.rooms: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []

    async def start(self) -> None:
        self.events = await self.ari.events(SERVICE_APP, sources=(), on_event=self._on_event)

    def _on_event(self, event: Json) -> None:
        if event.get("type") == "StasisStart" and event.get("args"):
            task = asyncio.create_task(self._admit(event["channel"]["id"], event["args"][0]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _admit(self, channel_id: str, room: str) -> None:
        try:
            async with self._locks.setdefault(room, asyncio.Lock()):
                if room not in self.rooms:
                    await self.ari.request(
                        "POST", "/bridges", type="mixing", bridgeId=room, name=room
                    )
                    self.rooms.add(room)
            await self.ari.request("POST", f"/bridges/{room}/addChannel", channel=channel_id)
        except Exception as exc:  # seen by the test through Conference.join
            self.failures.append(exc)

    async def end(self, room: str) -> None:
        """Destroy the room's bridge (the conference service ends the conference)."""
        self.rooms.discard(room)
        with contextlib.suppress(AriError):
            await self.ari.request("DELETE", f"/bridges/{room}")

    async def close(self) -> None:
        for room in list(self.rooms):
            await self.end(room)
        if self.events is not None:
            await self.events.close()


class Participant:
    """One SIPp participant: its channel, marker tone and what it received."""

    def __init__(self, conf: Conference, number: str, hz: float, sipp: SippProcess) -> None:
        self.conf = conf
        self.number = number
        self.marker_hz = hz
        self.sipp = sipp
        self.media_port = 0
        self.capture: RtpCapture | None = None
        self.channel_id = ""
        self.joined_at = 0.0
        self.left_at: float | None = None

    def received(self) -> list[RtpPacket]:
        return self.capture.packets() if self.capture is not None else []

    def quiet_frames(self, start: float | None = None, end: float | None = None) -> list[RtpPacket]:
        """Frames received in [start, end) that carried no speech (markers show there)."""
        threshold = min(SPEECH_THRESHOLD_DBFS, MARKERS_ONLY_DBFS)
        return [
            p
            for p in self.received()
            if (start is None or p.arrival >= start)
            and (end is None or p.arrival < end)
            and level_dbfs(p.samples) <= threshold
        ]

    def hears(self, other: Participant, frames: Sequence[RtpPacket]) -> float:
        """Share of ``frames`` that carry ``other``'s marker tone."""
        if not frames:
            return 0.0
        heard = sum(
            1
            for p in frames
            if tone_dbfs(p.samples, other.marker_hz, p.sample_rate) > MARKER_HEARD_DBFS
        )
        return heard / len(frames)

    async def leave(self) -> None:
        """Hang the participant up (Asterisk sends the BYE) and wait until it is gone."""
        with contextlib.suppress(AriError):
            await self.conf.ari.hangup(self.channel_id)
        await self.conf.events.wait_until(lambda: not self.conf.events.alive(self.channel_id), 10)
        self.left_at = time.time()
        await self.sipp.stop(0.5)
        if self.capture is not None:
            await self.capture.stop()


class Conference:
    """A conference room of either kind with SIPp participants; leaving the block hangs
    up every participant, ends the room and reaps every process."""

    def __init__(
        self,
        kind: Kind,
        events: AriEvents,
        workdir: Path,
        sip_port: int = 5060,
        service: ConferenceService | None = None,
        duration_s: float = 60.0,
        customer_id: str = "cust-1",
        codec: CodecName = "ulaw",
        room: str | None = None,
        prompted: bool = False,
    ) -> None:
        self.kind = kind
        self.events = events
        self.ari = events.ari
        self.workdir = workdir
        self.sip_port = sip_port
        self.service = service
        self.duration_s = duration_s
        self.customer_id = customer_id
        self.codec = codec
        self.room = room or f"room-{random.randrange(16**8):08x}"
        self.prompted = prompted  # ConfBridge participants hear its prompts (confp-<room>)
        self.participants: list[Participant] = []
        assert kind == "confbridge" or service is not None, "an ARI conference needs a service"

    @property
    def reference(self) -> str:
        """The reference_id a speaking create names: the room (ConfBridge) or the bridge id
        (ARI; the service makes it equal to the room)."""
        return self.room

    async def __aenter__(self) -> Conference:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def join(self, within_s: float = 10.0) -> Participant:
        """A new participant, once its channel is Up in the room and its RTP flows."""
        number = "6" + "".join(random.choices("0123456789", k=11))
        hz = MARKER_HZ[len(self.participants) % len(MARKER_HZ)]
        work = self.workdir / f"{self.room}-{number}"
        work.mkdir(parents=True, exist_ok=True)
        sip, media = pick_ports(2, span=4)
        seconds = self.duration_s + PCAP_SLACK_S
        pcap = write_rtp_pcap(
            work / "rtp.pcap",
            self.codec,
            seconds,
            seed=len(self.participants) + 11,
            marker_tone=(hz, MARKER_DBFS),
        )
        who = Participant(self, number, hz, SippProcess("participant", work))
        who.media_port = media
        self.participants.append(who)
        who.capture = RtpCapture(work / "received.pcap", [media])
        await who.capture.start()
        await self.events.ready()
        prefix = "ari" if self.kind == "ari" else "confp" if self.prompted else "conf"
        common = ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-aa", "-timeout", f"{int(seconds)}s"]
        await who.sipp.start(
            "uac.xml",
            [
                f"127.0.0.1:{self.sip_port}",
                *common,
                "-p",
                str(sip),
                "-mp",
                str(media),
                "-s",
                f"{prefix}-{self.room}",
                "-d",
                str(int(self.duration_s * 1000)),
            ],
            {
                "pt": str(CODECS[self.codec].payload_type),
                "rtpmap": CODECS[self.codec].rtpmap,
                "pcap": str(pcap),
                "caller_number": number,
                "customer_id": self.customer_id,
            },
        )
        await self._watch(who, self._in_room(who), within_s)
        who.joined_at = time.time()
        return who

    async def _in_room(self, who: Participant) -> None:
        def up() -> bool:
            for cid, ch in self.events.channels.items():
                if ch.get("caller", {}).get("number") == who.number and self.events.alive(cid):
                    who.channel_id = cid
                    return ch.get("state") == "Up"
            return False

        await self.events.wait_until(up, 10.0)
        while True:  # in the room's bridge: there is no event for a ConfBridge's bridge
            if self.service is not None and self.service.failures:
                raise self.service.failures[0]
            channels = await self._bridge_channels()
            # Alone in an ARI mixing bridge a participant receives nothing: Asterisk uses
            # its two-party technology there until a third channel joins (ConfBridge
            # always mixes, and sends the lone participant audio).
            alone = self.kind == "ari" and channels == [who.channel_id]
            if who.channel_id in channels and (who.received() or alone):
                return
            await asyncio.sleep(0.05)

    async def _bridge_channels(self) -> list[str]:
        for bridge in await self.ari.bridges():
            if bridge.get("name") == self.room:
                return list(bridge.get("channels", []))
        return []

    async def _watch(
        self, who: Participant, goal_coro: Coroutine[Any, Any, None], within_s: float
    ) -> None:
        goal = asyncio.ensure_future(goal_coro)
        death = asyncio.ensure_future(who.sipp.wait())
        try:
            done, _ = await asyncio.wait(
                {goal, death}, timeout=within_s, return_when="FIRST_COMPLETED"
            )
            if goal in done:
                goal.result()
                return
            if death in done:
                raise who.sipp.failure("ended before joining")
            seen = self.events.channels.get(who.channel_id, {})
            raise TimeoutError(
                f"participant {who.number} not in {self.room} within {within_s} s "
                f"(channel {who.channel_id or 'not seen'}, state {seen.get('state')}, "
                f"in the bridge: {who.channel_id in await self._bridge_channels()}, "
                f"RTP received: {len(who.received())} packets)"
            )
        finally:
            goal.cancel()
            death.cancel()

    async def bridge(self) -> Json | None:
        for bridge in await self.ari.bridges():
            if bridge.get("name") == self.room:
                return bridge
        return None

    async def end(self) -> None:
        """End the conference: the ARI service destroys its bridge; a ConfBridge room
        ends when its last participant leaves."""
        if self.service is not None:
            await self.service.end(self.room)
        for who in self.participants:
            if who.left_at is None:
                await who.leave()

    async def close(self) -> None:
        try:
            for who in self.participants:
                if who.left_at is None:
                    with contextlib.suppress(Exception):
                        await who.leave()
        finally:
            for who in self.participants:
                await who.sipp.stop(0.0)
                if who.capture is not None:
                    await who.capture.stop()
            if self.service is not None:
                await self.service.end(self.room)
