"""Self-check of the telephony harness against the real Asterisk (instance from env).

Proves what later end-to-end tests rely on: both parties get continuous RTP in
the chosen codec, the background is quiet (no frame at speech level), the legs
are bridged, nothing is left in Asterisk afterwards, and a real prompt whispered
to the caller is seen as speech at the caller only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import ARI_AUTH, ARI_URL, INSTANCE

from .analysis import (
    count_loud,
    first_loud_time,
    level_dbfs,
    max_gap,
    packet_rate,
    speech_frames,
    write_wav,
)
from .ari import Ari, AriError, AriEvents
from .media import CODECS, CodecName
from .sipp import TwoLegCall, two_leg_call

pytestmark = pytest.mark.e2e

SIP_PORT = 5060 + 100 * INSTANCE


@pytest.fixture
async def ari() -> AsyncIterator[Ari]:
    """An ARI client of the test's own, usable after the call's client is closed."""
    client = Ari(ARI_URL, ARI_AUTH)
    yield client
    await client.close()


async def leftovers(ari: Ari, call: TwoLegCall) -> list[str]:
    """Names of channels of this call still in Asterisk (others may share the instance)."""
    ours = {call.caller_channel_id, call.callee_channel_id}
    return [
        c["name"]
        for c in await ari.channels()
        if c["id"] in ours
        or call.tag in (c["caller"]["number"], c["connected"]["number"])
        or call.caller_channel_id in c["name"]
    ]


@pytest.mark.parametrize("codec", ["ulaw", "slin16"])
async def test_call_is_bridged_continuous_and_quiet(
    codec: CodecName, tmp_path: Path, ari: Ari, harness_events: AriEvents
) -> None:
    spec = CODECS[codec]
    async with two_leg_call(
        sip_port=SIP_PORT,
        ari_url=ARI_URL,
        ari_auth=ARI_AUTH,
        codec=codec,
        duration_s=4.0,
        customer_id="cust-harness",
        workdir=tmp_path,
        events=harness_events,
    ) as call:
        caller = await call.ari.request("GET", f"/channels/{call.caller_channel_id}")
        callee = await call.ari.request("GET", f"/channels/{call.callee_channel_id}")
        assert caller["state"] == callee["state"] == "Up"
        assert caller["caller"]["number"] == call.tag
        assert caller["name"].startswith("PJSIP/caller-")
        assert callee["name"].startswith("PJSIP/callee-")
        var = await call.ari.request(
            "GET", f"/channels/{call.caller_channel_id}/variable", variable="SPEAKING_CUSTOMER_ID"
        )
        assert var["value"] == "cust-harness"
        bridges = [
            b
            for b in await call.ari.bridges()
            if {call.caller_channel_id, call.callee_channel_id} <= set(b["channels"])
        ]
        assert len(bridges) == 1, "caller and callee are not in one bridge"

        await call.wait_hangup(timeout=10.0)  # the UAC's 4 s pause ends, it sends BYE
        assert call.uac.returncode == 0
    assert call.uas.returncode == 0
    assert not await leftovers(ari, call)

    for party in ("caller", "callee"):
        packets = call.received(party)
        write_wav(tmp_path / f"{party}.wav", packets)
        assert {p.payload_type for p in packets} == {spec.payload_type}, party
        assert {len(p.samples) for p in packets} == {spec.samples_per_frame}, party
        assert 185 <= len(packets) <= 205, (party, len(packets))  # 4 s of 20 ms frames
        assert 48.0 <= packet_rate(packets) <= 52.0, party
        # No lost stretch: a gap of 7 frames is a lost packet or two on a busy host (the
        # suite's lanes share 2 cores: 106 ms seen once), a lost second is not.
        assert max_gap(packets) < 0.15, party
        assert speech_frames(packets) == [], party
        assert max(level_dbfs(p.samples) for p in packets) < -45.0, party


@pytest.mark.parametrize("codec", ["ulaw", "slin16"])
async def test_prompt_whispered_to_caller_is_speech_at_caller_only(
    codec: CodecName, tmp_path: Path, ari: Ari, harness_events: AriEvents
) -> None:
    async with two_leg_call(
        sip_port=SIP_PORT,
        ari_url=ARI_URL,
        ari_auth=ARI_AUTH,
        codec=codec,
        duration_s=20.0,
        workdir=tmp_path,
        events=harness_events,
    ) as call:
        # The caller is in a Dial() bridge, not in Stasis: ARI refuses to play to it.
        with pytest.raises(AriError) as refused:
            await call.ari.request(
                "POST", f"/channels/{call.caller_channel_id}/play", media="sound:hello-world"
            )
        assert refused.value.status == 409
        # A snoop with whisper=out in our app: what is played on it, the caller hears.
        snoop_id = f"snoop-{call.tag}"
        started = time.time()
        await call.ari.request(
            "POST",
            f"/channels/{call.caller_channel_id}/snoop",
            app=call.app,
            whisper="out",
            spy="none",
            snoopId=snoop_id,
        )
        await call.events.wait_until(lambda: snoop_id in call.events.stasis_channels, 2.0)
        playback_id = f"pb-{call.tag}"
        await call.ari.request(
            "POST", f"/channels/{snoop_id}/play", media="sound:hello-world", playbackId=playback_id
        )
        await call.events.wait_until(
            lambda: any(
                e["type"] == "PlaybackFinished" and e["playback"]["id"] == playback_id
                for e in call.events.events
            ),
            10.0,
        )
        finished = time.time()
        await call.ari.hangup(snoop_id)

        caller, callee = call.received("caller"), call.received("callee")
        write_wav(tmp_path / "caller.wav", caller)
        first = first_loud_time(caller, after=started)
        assert first is not None and first - started < 0.5
        # "Hello world" is about 1.4 s: most of its 20 ms frames are above the threshold.
        assert count_loud(caller, started, finished + 0.2) >= 40
        assert count_loud(caller, finished + 0.2) == 0
        assert count_loud(caller, None, started) == 0
        assert speech_frames(callee) == []
    assert not await leftovers(ari, call)
