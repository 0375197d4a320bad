"""Load: N concurrent two-leg SIP calls, one speaking session each, through the public API.

The load generator stays light: ONE SIPp process answers all N callee legs and ONE
places all N caller legs (``-m N``), each playing quiet RTP from a pcap; one tcpdump
records what reaches the callers' media port, and each call's audio is told apart by
the Asterisk RTP port it comes from (``CHANNEL(rtp,src)``). The worker and the API are
real processes on the main Redis; events are read from the global event stream by one
reader. Per N:

1. N creates at once (POST /v1.0/speakings, direction ``in``): create -> active;
2. N says at once (the same sentence: after one warm-up say the synthesis cache serves
   them all, so synthesis is not what this measures): say -> first frame sent (the
   worker's ``latency_ms``) and -> first loud frame received by the caller;
3. N long says, then N flushes at once: flush -> the caller's last loud frame;
4. N stops; then what of ours is left in Asterisk (must be nothing).

CPU (core-ms per second of wall time, from /proc) of the worker, the API, Asterisk and
SIPp while the N says play, and the worker's RSS before the creates, with N idle
sessions and while they stream. The timing of the frames during the measured says
(bench/rtp_quality.py): what the worker sent to Asterisk (a second tcpdump on
Asterisk's RTP ports; RTP transport only) and what the callers received from Asterisk:
frames lost, duplicated, late (over 20 ms behind the stream's schedule) and the
inter-arrival jitter. Prints a table and writes bench/results/load-<transport>.json.

``--transport websocket`` serves the (narrowband) calls over chan_websocket instead of
RTP (SPEAKING_NARROWBAND_WEBSOCKET=1), for the side-by-side comparison.

    python -m bench.load [--calls 1,50,100] [--voice espeak] [--transport rtp|websocket]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.latency import percentiles
from bench.rtp_quality import Sent, combined, quality
from bench.stack import bench_stack
from tests.conftest import RTP_PORTS, asterisk_pid, bring_up
from tests.e2e.api_fixtures import Api
from tests.e2e.conftest import our_leftovers
from tests.e2e.processes import SIP_PORT
from tests.telephony.analysis import SPEECH_THRESHOLD_DBFS, level_dbfs
from tests.telephony.ari import AriEvents
from tests.telephony.capture import RtpCapture, RtpPacket
from tests.telephony.media import CODECS
from tests.telephony.rtp_pcap import write_rtp_pcap
from tests.telephony.sipp_process import SippProcess, pick_ports

RESULTS = Path(__file__).parent / "results"
SENTENCE = "Hello! This is your agent speaking. How can I help you today?"
LONG = "This is a long announcement that is about to be interrupted. " * 4
TICK = os.sysconf("SC_CLK_TCK")
CALL_SECONDS = 120.0
Key = tuple[str, str, str]  # speaking id, event type, segment id


class EventLog:
    """When each (speaking id, event type, segment id) was first seen on the global
    event stream, with its fields: one reader for all sessions."""

    def __init__(self, redis: Redis, key: str = "speaking:events") -> None:
        self.redis = redis
        self.key = key
        self.seen: dict[Key, tuple[float, dict[str, str]]] = {}
        self._from: Any = b"$"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        last = await self.redis.xrevrange(self.key, count=1)
        self._from = last[0][0] if last else b"0-0"
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            found: Any = await self.redis.xread({self.key: self._from}, block=500)
            for _stream, entries in found:
                now = time.time()
                for entry_id, raw in entries:
                    self._from = entry_id
                    f = {k.decode(): v.decode() for k, v in raw.items()}
                    key = (f.get("speaking_id", ""), f.get("type", ""), f.get("segment_id", ""))
                    self.seen.setdefault(key, (now, f))

    async def settled(self, sids: list[str], within_s: float) -> list[str]:
        """Wait until each session started or stopped; the ids of those that started."""
        started = [(s, "speaking_started", "") for s in sids]
        stopped = [(s, "speaking_stopped", "") for s in sids]
        pairs = list(zip(started, stopped, strict=True))
        async with asyncio.timeout(within_s):
            while any(a not in self.seen and b not in self.seen for a, b in pairs):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        return [s for s, key in zip(sids, started, strict=True) if key in self.seen]

    async def wait_all(self, keys: list[Key], within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while any(k not in self.seen for k in keys):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    def at(self, key: Key) -> float:
        return self.seen[key][0]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loud(packets: list[RtpPacket], port: int, after: float) -> list[float]:
    """Arrival times of the loud frames from Asterisk's RTP port ``port`` after a time."""
    return [
        p.arrival
        for p in packets
        if p.src_port == port
        and p.arrival >= after
        and level_dbfs(p.samples) > SPEECH_THRESHOLD_DBFS
    ]


def dropped_by_kernel(capture: RtpCapture) -> int:
    """What tcpdump said it missed ("N packets dropped by kernel"), once stopped."""
    for line in capture.stderr.splitlines():
        if "dropped by kernel" in line:
            return int(line.split()[0])
    return 0


def timing(packets: list[RtpPacket], start: float, end: float) -> dict[str, object]:
    """bench/rtp_quality.py per stream (source port) over the packets in [start, end]."""
    streams: dict[int, list[Sent]] = {}
    for p in packets:
        if start <= p.arrival <= end:
            streams.setdefault(p.src_port, []).append(Sent(p.arrival, p.seq, p.timestamp))
    return combined(quality(s, 8000) for s in streams.values())


async def post_all_answered(
    api: Api, paths: list[str], within_s: float = 30.0
) -> list[dict[str, Any]]:
    """POST each path (no body) at once; a 503 is sent again until ``within_s``: the
    answers, each with its final ``_status`` and how many ``_tries`` it took."""

    async def one(path: str) -> dict[str, Any]:
        tries = 0
        async with asyncio.timeout(within_s):
            while True:
                tries += 1
                status, answer = await api.call("POST", path, json={})
                if status != 503:
                    return {**answer, "_status": status, "_tries": tries}

    return list(await asyncio.gather(*(one(p) for p in paths)))


async def post_all(api: Api, paths: list[str], body: dict[str, Any]) -> list[dict[str, Any]]:
    """The same POST to every path at once; each answer gets ``_sent`` (when it left) and
    ``_status``."""

    async def one(path: str) -> dict[str, Any]:
        sent = time.time()
        status, answer = await api.call("POST", path, json=body)
        assert status in (200, 201, 503), (path, status, answer)  # 503: counted by callers
        return {**answer, "_sent": sent, "_status": status}

    return list(await asyncio.gather(*(one(p) for p in paths)))


class Calls:
    """N two-leg calls carried by one SIPp process per side."""

    def __init__(self, n: int, events: AriEvents, work: Path) -> None:
        self.n, self.events, self.work = n, events, work
        self.uas, self.uac = SippProcess("uas", work), SippProcess("uac", work)
        uas_sip, self.uac_sip, uas_media, self.uac_media = pick_ports(4, span=4)
        self.uas_sip, self.uas_media = uas_sip, uas_media
        self.capture = RtpCapture(work / "received.pcap", [self.uac_media])
        # What reaches Asterisk's RTP ports from anyone but SIPp: the worker's frames.
        sipp = " ".join(f"and not src port {p}" for p in (uas_media, self.uac_media))
        bpf = f"udp and dst portrange {RTP_PORTS[0]}-{RTP_PORTS[1]} {sipp}"
        self.sent = RtpCapture(work / "sent.pcap", [], bpf=bpf)
        self.ports: dict[str, int] = {}  # caller channel -> Asterisk's RTP port

    async def start(self) -> None:
        codec = CODECS["ulaw"]
        keys = {"pt": str(codec.payload_type), "rtpmap": codec.rtpmap}
        length = CALL_SECONDS + 30
        common = ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-aa", "-timeout", f"{int(length)}s"]
        await self.capture.start()
        await self.sent.start()
        known = {c for c in self.events.channels if self.events.alive(c)}
        uas_pcap = write_rtp_pcap(self.work / "uas.pcap", "ulaw", length, seed=2)
        uac_pcap = write_rtp_pcap(self.work / "uac.pcap", "ulaw", length, seed=1)
        uas_args = [*common, "-p", str(self.uas_sip), "-mp", str(self.uas_media)]
        await self.uas.start("uas.xml", uas_args, {**keys, "pcap": str(uas_pcap)}, self.n)
        uac_args = [f"127.0.0.1:{SIP_PORT}", *common, "-p", str(self.uac_sip)]
        uac_args += ["-mp", str(self.uac_media), "-s", str(self.uas_sip)]
        uac_args += ["-d", str(int(CALL_SECONDS * 1000)), "-l", str(self.n), "-r", "50"]
        uac_keys = {**keys, "pcap": str(uac_pcap), "caller_number": "7000"}
        await self.uac.start("uac.xml", uac_args, {**uac_keys, "customer_id": "cust-1"}, self.n)

        def callers() -> list[str]:
            return [
                c
                for c, ch in self.events.channels.items()
                if c not in known
                and self.events.alive(c)
                and str(ch.get("name", "")).startswith("PJSIP/caller-")
                and ch.get("state") == "Up"
            ]

        await self.events.wait_until(lambda: len(callers()) >= self.n, 30 + self.n / 5)
        for channel in callers()[: self.n]:
            path = f"/channels/{channel}/variable"
            src = await self.events.ari.request("GET", path, variable="CHANNEL(rtp,src)")
            self.ports[channel] = int(str(src["value"]).rsplit(":", 1)[1])

    @property
    def sipp_pids(self) -> list[int]:
        return [p.proc.pid for p in (self.uas, self.uac) if p.proc is not None]

    async def close(self) -> None:
        for channel in self.ports:
            await self.events.ari.hangup(channel)
        await asyncio.gather(self.uac.stop(1.0), self.uas.stop(1.0))
        await self.capture.stop()
        await self.sent.stop()


async def run(
    n: int, api: Api, events: AriEvents, log: EventLog, pids: dict[str, int], voice: str, work: Path
) -> dict[str, Any]:
    calls = Calls(n, events, work)
    await calls.start()
    try:
        return await measure(calls, api, log, pids, voice)
    finally:
        await calls.close()


async def measure(
    calls: Calls, api: Api, log: EventLog, pids: dict[str, int], voice: str
) -> dict[str, Any]:
    worker = pids["worker"]
    rss_before = rss_kb(worker)
    body = {"reference_type": "call", "language": "en-US", "provider": "offline"}
    body |= {"voice_id": voice, "direction": "in"}
    channels = list(calls.ports)

    refused: dict[str, int] = {}
    answered: list[float] = []  # create -> 201 (locate and the worker's check included)

    async def create(channel: str) -> tuple[str, str, float] | None:
        sent = time.time()
        request = body | {"reference_id": channel}
        status, answer = await api.call("POST", "/v1.0/speakings", json=request)
        if status != 201:  # counted; the call is left out of the later phases
            reason = f"{status} {answer.get('error', {}).get('message', '')}"
            refused[reason] = refused.get(reason, 0) + 1
            return None
        answered.append((time.time() - sent) * 1000)
        return channel, str(answer["id"]), sent

    answered_creates = [c for c in await asyncio.gather(*(create(c) for c in channels)) if c]
    # A session whose media could not be built stops by itself: counted, then left out.
    live = set(await log.settled([s for _, s, _ in answered_creates], 60))
    created = [c for c in answered_creates if c[1] in live]
    measured = {c: calls.ports[c] for c, _, _ in created}
    sid_of = {c: s for c, s, _ in created}
    sids = list(sid_of.values())
    create_ms = [(log.at((s, "speaking_started", "")) - t) * 1000 for _, s, t in created]
    setup_ms = [float(log.seen[(s, "speaking_started", "")][1]["setup_ms"]) for s in sids]
    rss_idle = rss_kb(worker)

    warm = await post_all(api, [f"/v1.0/speakings/{sids[0]}/say"], {"text": SENTENCE})
    await log.wait_all([(sids[0], "segment_finished", warm[0]["segment_id"])], 30)
    await asyncio.sleep(0.5)  # its last frames reach the caller before the measured says

    cpu0 = {name: cpu_ms(pid) for name, pid in pids.items()}
    sipp0 = sum(cpu_ms(p) for p in calls.sipp_pids)
    t0 = time.time()
    says = await post_all(api, [f"/v1.0/speakings/{s}/say" for s in sids], {"text": SENTENCE})
    # A say the API answered 503 (the worker did not answer in its time): counted, and its
    # session left out of what follows.
    refused_says = sum(1 for a in says if a["_status"] != 200)
    every_sid = list(sids)  # all of them are stopped at the end
    kept = [(s, a) for s, a in zip(sids, says, strict=True) if a["_status"] == 200]
    sids, says = [s for s, _ in kept], [a for _, a in kept]
    measured = {c: p for c, p in measured.items() if sid_of[c] in set(sids)}
    segment_of = {s: a["segment_id"] for s, a in zip(sids, says, strict=True)}
    said = {s: a["_sent"] for s, a in zip(sids, says, strict=True)}
    await log.wait_all([(s, "segment_started", segment_of[s]) for s in sids], 60)
    rss_streaming = rss_kb(worker)
    await log.wait_all([(s, "segment_finished", segment_of[s]) for s in sids], 60)
    t1 = time.time()
    wall = t1 - t0
    cpu = {name: (cpu_ms(pid) - cpu0[name]) / wall for name, pid in pids.items()}
    cpu["sipp"] = (sum(cpu_ms(p) for p in calls.sipp_pids) - sipp0) / wall

    longs = await post_all(api, [f"/v1.0/speakings/{s}/say" for s in sids], {"text": LONG})
    playing = [(s, a) for s, a in zip(sids, longs, strict=True) if a["_status"] == 200]
    refused_says += len(longs) - len(playing)
    await log.wait_all([(s, "segment_started", a["segment_id"]) for s, a in playing], 60)
    await asyncio.sleep(1.0)  # let them speak, then barge in on all at once
    flushes = await post_all(api, [f"/v1.0/speakings/{s}/flush" for s, _ in playing], {})
    flushed = {
        s: a["_sent"] for (s, _), a in zip(playing, flushes, strict=True) if a["_status"] == 200
    }
    await asyncio.sleep(0.5)  # what arrives in the next 500 ms counts against the flush

    stops = await post_all_answered(api, [f"/v1.0/speakings/{s}/stop" for s in every_sid], 90)
    assert all(a.get("status") == "stopped" for a in stops), stops
    stops_late = sum(1 for a in stops if a["_tries"] > 1)
    await asyncio.sleep(0.3)
    packets = calls.capture.packets()
    heard_ms, silence_ms = [], []
    for channel, port in measured.items():
        sid = sid_of[channel]
        first = loud(packets, port, said[sid])
        if first:
            heard_ms.append((first[0] - said[sid]) * 1000)
        if sid in flushed:
            after = loud(packets, port, flushed[sid])
            silence_ms.append((after[-1] - flushed[sid]) * 1000 if after else 0.0)
    sent_ms = [
        float(log.seen[(s, "segment_started", segment_of[s])][1]["latency_ms"]) for s in sids
    ]
    heard_ports = set(measured.values())
    dropped = {"received": dropped_by_kernel(calls.capture), "sent": dropped_by_kernel(calls.sent)}
    party = timing([p for p in packets if p.src_port in heard_ports], t0, t1)
    sent = timing(calls.sent.packets(), t0, t1)
    return {
        "n": len(channels),
        "sessions": len(sids),
        "creates_refused": refused,
        "setups_failed": len(answered_creates) - len(created),
        # Stops the API answered 503 (its reply timeout) while Asterisk was saturated;
        # each was sent again until it was answered stopped.
        "stops_answered_late": stops_late,
        "says_or_flushes_refused": refused_says + len(playing) - len(flushed),
        "create_to_active_ms": percentiles(create_ms),
        "create_answered_ms": percentiles(answered),
        "worker_setup_ms": percentiles(setup_ms),
        "say_to_first_frame_sent_ms": percentiles(sent_ms),
        "say_to_first_frame_heard_ms": percentiles(heard_ms) if heard_ms else None,
        "callers_who_heard": len(heard_ms),
        "flush_to_silence_ms": percentiles(silence_ms),
        # During the measured says: what the worker sent (RTP only) / what callers got.
        "frames_sent_by_worker": sent if sent["streams"] else None,
        "frames_at_party": party,
        # tcpdump's own losses: frames it missed look lost above.
        "capture_dropped": dropped,
        "cpu_core_ms_per_s": {k: round(v, 1) for k, v in cpu.items()},
        # Every session streams throughout the window: one second of audio per second.
        "worker_core_ms_per_audio_s": round(cpu["worker"] / len(sids), 3),
        "worker_rss_kb": {"before": rss_before, "idle": rss_idle, "streaming": rss_streaming},
        "worker_kb_per_session": {
            "idle": round((rss_idle - rss_before) / len(every_sid), 1),
            "streaming": round((rss_streaming - rss_before) / len(sids), 1),
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="1,50,100", help="comma-separated N values")
    parser.add_argument("--voice", default="espeak", help="espeak or en_US-joe-medium (piper)")
    parser.add_argument("--transport", default="rtp", choices=("rtp", "websocket"))
    args = parser.parse_args()
    problem = bring_up()
    if problem:
        raise SystemExit(problem)
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    websocket = "1" if args.transport == "websocket" else "0"
    results = []
    async with bench_stack("bench-load", workdir, SPEAKING_NARROWBAND_WEBSOCKET=websocket) as s:
        log = EventLog(s.redis)
        await log.start()
        pids = s.pids() | {"asterisk": asterisk_pid()}
        try:
            for n in (int(v) for v in args.calls.split(",")):
                work = workdir / f"n{n}"
                work.mkdir()
                result = await run(n, s.api, s.events, log, pids, args.voice, work)
                result["leftovers"] = await our_leftovers(s.ari)
                results.append(result)
                print_row(result)
                write(results, args.voice, args.transport)  # after each N: a later may not end
        finally:
            await log.stop()
    print(f"\nwritten to {RESULTS / f'load-{args.transport}.json'}")


def write(results: list[dict[str, Any]], voice: str, transport: str) -> None:
    """Into load-<transport>.json, replacing earlier results for the same N only."""
    RESULTS.mkdir(exist_ok=True)
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "voice": voice}
    meta["transport"] = transport
    path = RESULTS / f"load-{transport}.json"
    earlier = json.loads(path.read_text()).get("results", []) if path.exists() else []
    ns = {r["n"] for r in results}
    merged = sorted([r for r in earlier if r["n"] not in ns] + results, key=lambda r: r["n"])
    path.write_text(json.dumps({**meta, "results": merged}, indent=2))


def brief(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    return (
        f"{t['frames']} frames lost {t['lost']} dup {t['duplicated']} late {t['late']} "
        f"jitter p99 {t['jitter_ms']['p99']} ms"
    )


def print_row(r: dict[str, Any]) -> None:
    def pp(key: str) -> str:
        p = r.get(key)
        return f"{p['p50']:7.1f} / {p['p99']:7.1f}" if p else "      -"

    print(
        f"N={r['n']:4}  create->active {pp('create_to_active_ms')} (201 after "
        f"{pp('create_answered_ms')}, media built in {pp('worker_setup_ms')})  say->sent "
        f"{pp('say_to_first_frame_sent_ms')}  say->heard {pp('say_to_first_frame_heard_ms')} "
        f"({r['callers_who_heard']}/{r['n']}, refused {sum(r['creates_refused'].values())})"
        f"  flush->silence {pp('flush_to_silence_ms')}  "
        f"cpu {r['cpu_core_ms_per_s']}  KB/session {r['worker_kb_per_session']}  "
        f"sent {brief(r['frames_sent_by_worker'])}  at party {brief(r['frames_at_party'])}  "
        f"leftovers {len(r['leftovers'])}"
    )


if __name__ == "__main__":
    asyncio.run(main())
