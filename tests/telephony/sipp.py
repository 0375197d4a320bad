"""Place a real two-leg call through Asterisk and watch what each party receives.

    async with two_leg_call(codec="ulaw", duration_s=30, workdir=tmp_path) as call:
        ...  # drive the product against call.caller_channel_id
        loud = speech_frames(call.received("caller"))

A SIPp UAC calls Asterisk, whose dialplan Dial()s a SIPp UAS; both play quiet RTP
for the whole call (whisper only mixes into flowing audio) and tcpdump records
the RTP arriving at each SIPp's media port. The call's channels are watched
through a long-lived harness app subscribed to the SIP endpoints (never
subscribeAll: see ari.py); pass the session's ``events`` to share one, otherwise
the call opens an app of its own for its lifetime. Start order is capture, ARI
events, UAS, UAC, so nothing is missed; the call is handed over once both
channels are Up and RTP reaches both parties (so they are bridged). Leaving the
block hangs up what is left over ARI, reaps both SIPps and tcpdump, and waits
until Asterisk has destroyed the call's channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from .ari import Ari, AriError, AriEvents
from .capture import RtpCapture, RtpPacket
from .media import CODECS, CodecName
from .rtp_pcap import write_rtp_pcap
from .sipp_process import SippProcess, pick_ports

Party = Literal["caller", "callee"]
PCAP_SLACK_S = 30.0  # RTP keeps flowing this long past the planned duration


class TwoLegCall:
    """A call in progress: its ARI channel ids, tag, ports, and the captured RTP."""

    def __init__(
        self,
        tag: str,
        ari: Ari,
        events: AriEvents,
        capture: RtpCapture,
        uac: SippProcess,
        uas: SippProcess,
        media_ports: dict[Party, int],
    ) -> None:
        self.tag = tag
        self.ari = ari
        self.events = events
        self.capture = capture
        self.uac = uac
        self.uas = uas
        self.media_ports = media_ports
        self.caller_channel_id = ""
        self.callee_channel_id = ""
        self.setup_s = 0.0  # UAC start to both channels Up
        self.media_s = 0.0  # UAC start to RTP received by both parties

    @property
    def app(self) -> str:
        """Stasis app registered by the call's events websocket (for snoops in tests)."""
        return self.events.app

    def received(self, party: Party) -> list[RtpPacket]:
        """Decoded RTP that arrived at that party's media port so far (all of it after exit)."""
        return self.capture.packets(self.media_ports[party])

    def _our_channels(self) -> list[str]:
        ids = (self.caller_channel_id, self.callee_channel_id)
        return [c for c in ids if c and self.events.alive(c)]

    def _find_legs(self) -> bool:
        if not self.caller_channel_id:
            for cid, ch in self.events.channels.items():
                if ch.get("caller", {}).get("number") == self.tag and ch.get("name", "").startswith(
                    "PJSIP/"
                ):
                    self.caller_channel_id = cid
        if self.caller_channel_id and not self.callee_channel_id:
            self.callee_channel_id = self.events.dial_peers.get(self.caller_channel_id, "")
        return bool(self.caller_channel_id and self.callee_channel_id)

    def _ready(self) -> bool:
        if not self._find_legs():
            return False
        chans = self.events.channels
        return all(
            chans[c].get("state") == "Up" for c in (self.caller_channel_id, self.callee_channel_id)
        )

    async def _watch(
        self, what: str, condition: Coroutine[Any, Any, None], within_s: float
    ) -> None:
        """Await condition, failing early (with SIPp's logs) if a SIPp dies meanwhile."""
        goal: asyncio.Task[Any] = asyncio.create_task(condition)
        deaths: dict[asyncio.Task[Any], SippProcess] = {
            asyncio.create_task(p.wait()): p for p in (self.uac, self.uas)
        }
        try:
            done, _ = await asyncio.wait(
                {goal, *deaths}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
            )
            if goal in done:
                goal.result()
                return
            for task, proc in deaths.items():
                if task in done:
                    raise proc.failure(f"ended before {what}")
            raise TimeoutError(
                f"no {what} within {within_s} s (tag {self.tag}); SIP traces in {self.uac.workdir}"
            )
        finally:
            for task in (goal, *deaths):
                task.cancel()

    async def _wait_media(self) -> None:
        # Polls the capture file tcpdump appends to: there is no event to wait on.
        while not all(self.received(p) for p in ("caller", "callee")):  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def wait_hangup(self, timeout: float) -> None:  # noqa: ASYNC109 (the agreed API)
        """Wait until the UAC has hung up (its pause ended, or it got a BYE) and both
        legs are gone from Asterisk; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            await self.uac.wait()
            await self.events.wait_until(lambda: not self._our_channels(), timeout)

    async def close(self, grace: float = 3.0) -> None:
        """Hang up what is left of the call, wait for Asterisk to destroy it, then reap
        SIPp (given `grace` seconds to finish its BYE exchange) and tcpdump."""
        try:
            self._find_legs()  # also when set-up failed half-way
            for cid in self._our_channels():
                with contextlib.suppress(AriError):  # gone meanwhile
                    await self.ari.hangup(cid)
            if self.events.connected:
                # Leftovers show in the caller's own check of GET /channels.
                with contextlib.suppress(TimeoutError):
                    await self.events.wait_until(lambda: not self._our_channels(), 5.0)
        finally:
            await asyncio.gather(self.uac.stop(grace), self.uas.stop(grace))
            await self.capture.stop()


@asynccontextmanager
async def two_leg_call(
    sip_port: int = 5060,
    ari_url: str = "http://127.0.0.1:8088/ari",
    ari_auth: tuple[str, str] = ("speaking", "speaking-dev-secret"),
    codec: CodecName = "ulaw",
    duration_s: float = 60.0,
    customer_id: str = "cust-1",
    workdir: Path | None = None,
    setup_timeout: float = 10.0,
    events: AriEvents | None = None,
    caller_ip: str = "127.0.0.1",
) -> AsyncIterator[TwoLegCall]:
    """A live caller-Asterisk-callee call for `duration_s` (the UAC then sends BYE).
    ``events``: the session's long-lived harness app on that Asterisk, if there is one.
    ``caller_ip``: where the caller's SIP comes from (127.0.0.2: the untrusted endpoint
    "stranger" of asterisk-config/pjsip.conf; media stays on 127.0.0.1)."""
    tag = "7" + "".join(random.choices("0123456789", k=11))
    base = Path(workdir) if workdir else Path("/tmp/speaking-harness")
    work = base / f"call-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    spec = CODECS[codec]
    uas_sip, uac_sip, uas_media, uac_media = pick_ports(4, span=4)
    ports: dict[Party, int] = {"caller": uac_media, "callee": uas_media}
    keys = {"pt": str(spec.payload_type), "rtpmap": spec.rtpmap}
    seconds = duration_s + PCAP_SLACK_S
    uac_pcap = write_rtp_pcap(work / "uac_rtp.pcap", codec, seconds, tone_hz=None, seed=1)
    uas_pcap = write_rtp_pcap(work / "uas_rtp.pcap", codec, seconds, tone_hz=None, seed=2)
    common = ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-aa", "-timeout", f"{int(seconds)}s"]

    own_events = events is None
    ari = Ari(ari_url, ari_auth) if events is None else events.ari
    capture = RtpCapture(work / "received.pcap", ports.values())
    uac, uas = SippProcess("uac", work), SippProcess("uas", work)
    call: TwoLegCall | None = None
    try:
        await capture.start()
        if events is None:
            events = await ari.events(f"harness-{tag}")
        await events.ready()
        call = TwoLegCall(tag, ari, events, capture, uac, uas, ports)
        await uas.start(
            "uas.xml",
            [*common, "-p", str(uas_sip), "-mp", str(uas_media)],
            {**keys, "pcap": str(uas_pcap)},
        )
        started = time.monotonic()
        await uac.start(
            "uac.xml",
            [
                f"127.0.0.1:{sip_port}",
                *common,
                "-i",
                caller_ip,
                "-p",
                str(uac_sip),
                "-mp",
                str(uac_media),
                "-s",
                str(uas_sip),
                "-d",
                str(int(duration_s * 1000)),
            ],
            {**keys, "pcap": str(uac_pcap), "caller_number": tag, "customer_id": customer_id},
        )
        ready = events.wait_until(call._ready, setup_timeout)
        await call._watch("both legs Up", ready, setup_timeout)
        call.setup_s = time.monotonic() - started
        await call._watch("RTP at both parties", call._wait_media(), 5.0)
        call.media_s = time.monotonic() - started
        yield call
    finally:
        try:
            if call is not None:
                # A call that never came up has no BYE to finish: no grace then.
                await call.close(grace=3.0 if call.media_s else 0.0)
            else:
                await asyncio.gather(uac.stop(0.0), uas.stop(0.0))
                await capture.stop()
        finally:
            if own_events:
                if events is not None:
                    await events.close()
                await ari.close()
