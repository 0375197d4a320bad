"""The main job, end to end on this machine: a real two-leg SIP call through the local
Asterisk, the worker speaking into it with each direction, then into a three-party
dialplan ConfBridge room, and what each party heard.

Run by scripts/demo.sh (which starts Asterisk, Redis and the worker first). Writes
WAV files of what the caller and the callee received, per direction, and of what each
conference participant received, plus timings.json, into the output folder, and prints
the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from tests.telephony.analysis import (  # noqa: E402
    count_loud,
    first_loud_time,
    in_window,
    speech_frames,
    write_wav,
)
from tests.telephony.ari import Ari, AriEvents  # noqa: E402
from tests.telephony.conference import Conference  # noqa: E402
from tests.telephony.sipp import two_leg_call  # noqa: E402
from worker.client import SpeakingClient  # noqa: E402

SENTENCE = "Hello! This is your AI agent speaking. How can I help you today?"
BARGE_IN = (
    "This announcement is long on purpose. It keeps going so that it can be interrupted. "
    "A caller who starts talking should not have to wait for it to end."
)
WHO_HEARS = {"in": ("caller",), "out": ("callee",), "both": ("caller", "callee")}
ARI_URL, ARI_AUTH = "http://127.0.0.1:8088/ari", ("speaking", "speaking-dev-secret")


async def run_direction(
    client: SpeakingClient, call: Any, direction: str, voice: str, out: Path
) -> dict[str, Any]:
    speaking_id = str(uuid.uuid4())
    window_start = time.time()
    sent = time.time()
    reply = await client.send(
        "create",
        speaking_id,
        reference_type="call",
        reference_id=call.caller_channel_id,
        language="en-US",
        provider="offline",
        voice_id=voice,
        direction=direction,
    )
    if not reply["ok"]:
        raise SystemExit(f"create refused: {reply['error']}")
    await client.wait_event(speaking_id, "speaking_started", timeout_s=30)
    create_to_active = time.time() - sent

    say_sent = time.time()
    say = await client.send("say", speaking_id, text=SENTENCE)
    started = await client.wait_event(
        speaking_id, "segment_started", segment_id=say["segment_id"], timeout_s=30
    )
    await client.wait_event(
        speaking_id, "segment_finished", segment_id=say["segment_id"], timeout_s=60
    )
    await asyncio.sleep(0.3)  # let the last frames reach the parties before measuring
    hearer = WHO_HEARS[direction][0]
    first_heard = first_loud_time(call.received(hearer), after=say_sent)

    barge = await client.send("say", speaking_id, text=BARGE_IN)
    await client.wait_event(
        speaking_id, "segment_started", segment_id=barge["segment_id"], timeout_s=30
    )
    await asyncio.sleep(1.5)  # the caller "starts talking" 1.5 s into the announcement
    flush_sent = time.time()
    await client.send("flush", speaking_id)
    await asyncio.sleep(0.5)
    loud_after = [p.arrival for p in speech_frames(in_window(call.received(hearer), flush_sent))]
    loud_before = count_loud(call.received(hearer), start=flush_sent - 0.5, end=flush_sent)
    await client.send("stop", speaking_id)
    window_end = time.time()

    heard = {}
    for party in ("caller", "callee"):
        packets = in_window(call.received(party), window_start, window_end)
        heard[party] = count_loud(packets)
        write_wav(out / f"{direction}-{party}.wav", packets)
    return {
        "direction": direction,
        "speaking_id": speaking_id,
        "loud_frames": heard,
        "create_to_active_ms": round(create_to_active * 1000, 1),
        "say_to_first_frame_sent_ms": float(started["latency_ms"]),
        "say_to_first_audio_heard_ms": round((first_heard - say_sent) * 1000, 1)
        if first_heard
        else None,
        "loud_frames_in_500ms_before_flush": loud_before,
        "flush_to_silence_ms": round((max(loud_after) - flush_sent) * 1000, 1)
        if loud_after
        else 0.0,
    }


async def run_conference(
    client: SpeakingClient, events: AriEvents, voice: str, out: Path
) -> dict[str, Any]:
    """Three SIPp participants in ConfBridge room; one session speaks to all of them."""
    async with Conference("confbridge", events, out / "sipp", duration_s=60) as conf:
        people = [await conf.join() for _ in range(3)]
        speaking_id = str(uuid.uuid4())
        sent = time.time()
        reply = await client.send(
            "create",
            speaking_id,
            reference_type="confbridge",
            reference_id=conf.reference,
            language="en-US",
            provider="offline",
            voice_id=voice,
            direction="both",
        )
        if not reply["ok"]:
            raise SystemExit(f"conference create refused: {reply['error']}")
        await client.wait_event(speaking_id, "speaking_started", timeout_s=30)
        create_to_active = time.time() - sent
        say_sent = time.time()
        say = await client.send("say", speaking_id, text=SENTENCE)
        started = await client.wait_event(
            speaking_id, "segment_started", segment_id=say["segment_id"], timeout_s=30
        )
        await client.wait_event(
            speaking_id, "segment_finished", segment_id=say["segment_id"], timeout_s=60
        )
        await asyncio.sleep(0.3)  # let the last frames reach the participants
        await client.send("stop", speaking_id)
        heard = {}
        for n, who in enumerate(people, 1):
            heard[f"participant{n}"] = count_loud(who.received(), start=say_sent)
            write_wav(out / f"conference-participant{n}.wav", who.received())
        first = [first_loud_time(w.received(), after=say_sent) for w in people]
        return {
            "room": conf.reference,
            "speaking_id": speaking_id,
            "loud_frames": heard,
            "create_to_active_ms": round(create_to_active * 1000, 1),
            "say_to_first_frame_sent_ms": float(started["latency_ms"]),
            "say_to_first_audio_heard_ms": [
                round((t - say_sent) * 1000, 1) if t else None for t in first
            ],
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--worker-id", default="demo")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6399/0")
    parser.add_argument(
        "--voice",
        default="en_US-joe-medium",
        help="offline voice: en_US-joe-medium (piper) or espeak",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    redis = Redis.from_url(args.redis_url)
    client = SpeakingClient(redis, args.worker_id)
    results = []
    events = await Ari(ARI_URL, ARI_AUTH).events(f"demo-{uuid.uuid4().hex[:8]}")
    async with two_leg_call(workdir=args.out / "sipp", duration_s=120, events=events) as call:
        print(
            f"call up: caller channel {call.caller_channel_id}, callee {call.callee_channel_id} "
            f"({call.setup_s * 1000:.0f} ms to set up)"
        )
        for direction in ("in", "out", "both"):
            result = await run_direction(client, call, direction, args.voice, args.out)
            results.append(result)
            print(
                f"  direction {direction:4}: caller heard {result['loud_frames']['caller']:3} "
                f"loud frames, callee {result['loud_frames']['callee']:3}; barge-in: "
                f"{result['loud_frames_in_500ms_before_flush']} loud frames in the 500 ms "
                f"before the flush, last one {result['flush_to_silence_ms']:.0f} ms after it"
            )
        write_wav(args.out / "caller.wav", call.received("caller"))
        write_wav(args.out / "callee.wav", call.received("callee"))
    conference = await run_conference(client, events, args.voice, args.out)
    print(
        f"  conference {conference['room']}: "
        + ", ".join(f"{who} heard {n} loud frames" for who, n in conference["loud_frames"].items())
        + f"; create -> active {conference['create_to_active_ms']:.1f} ms"
    )
    await events.close()
    await events.ari.close()
    await redis.aclose()

    def col(key: str) -> list[float]:
        return [r[key] for r in results if r[key] is not None]

    summary = {
        k: {"median": statistics.median(col(k)), "max": max(col(k))}
        for k in (
            "create_to_active_ms",
            "say_to_first_frame_sent_ms",
            "say_to_first_audio_heard_ms",
            "flush_to_silence_ms",
        )
    }
    (args.out / "timings.json").write_text(
        json.dumps({"runs": results, "summary": summary, "conference": conference}, indent=2)
    )
    print("\ntimings (median / max over the three directions):")
    for key, value in summary.items():
        print(f"  {key:30} {value['median']:8.1f} ms  {value['max']:8.1f} ms")
    print(
        f"\nWAV files of what each party heard are in {args.out}/: "
        "in-caller.wav, in-callee.wav, out-*.wav, both-*.wav, caller.wav, callee.wav, "
        "conference-participant1..3.wav"
    )
    wrong = [
        r
        for r in results
        if any(
            (r["loud_frames"][p] > 0) != (p in WHO_HEARS[r["direction"]])
            for p in ("caller", "callee")
        )
    ]
    if wrong:
        raise SystemExit(f"audio reached the wrong party: {wrong}")
    if not all(conference["loud_frames"].values()):
        raise SystemExit(f"a conference participant heard nothing: {conference}")


if __name__ == "__main__":
    asyncio.run(main())
