"""A conference session ends when the conference ends, not on a passing moment.

Real Asterisk, Redis, SIPp and worker process. A ConfBridge room with one participant
used to end its session about 200 ms after start, at random (the worker's first poll
could come before its own Local channel had entered the room, and a count of parties
minus ours read zero; docs/media.md). Each case is tried many times, in rooms side by
side on one worker, and every try is asserted: a race shows as one failed try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from tests.e2e.conftest import ConferenceFactory
from tests.e2e.test_conferences import start
from tests.telephony.analysis import count_loud
from tests.telephony.conference import Conference, Kind, Participant
from worker.client import SpeakingClient
from worker.conference import VACANCY_GRACE_S
from worker.worker import CONFERENCE_POLL_S

pytestmark = [pytest.mark.e2e, pytest.mark.deadline(240)]

#: How long a session must stay active with its participant in the room: past the
#: moment the bug struck (~200 ms), and past a grace period and two polls besides.
HOLD_S = VACANCY_GRACE_S + 2 * CONFERENCE_POLL_S
#: The bound on "the last participant left" to "speaking_stopped": the grace period,
#: one poll to see the vacancy begin, and slack for ARI and Redis on a busy host.
ENDED_WITHIN_S = VACANCY_GRACE_S + CONFERENCE_POLL_S + 1.0
ROOMS_AT_ONCE = 10

Rooms = Callable[..., AbstractAsyncContextManager[list[Conference]]]


@pytest.fixture
def rooms(conference: ConferenceFactory) -> Rooms:
    """``rooms(kind, n, **options)``: n conference rooms, closed (every participant hung
    up, every SIPp and capture reaped) when the block ends."""

    @asynccontextmanager
    async def make(kind: Kind, n: int, **options: Any) -> AsyncIterator[list[Conference]]:
        async with AsyncExitStack() as stack:
            yield [await stack.enter_async_context(conference(kind, **options)) for _ in range(n)]

    return make


async def staggered(client: SpeakingClient, confs: list[Conference], i: int) -> str:
    """Start room ``i``'s session at its own phase of the worker's poll: rooms started
    at one moment meet the poll at one moment too, and would all win or all lose a race
    with it (seen: ten rooms at once all survived the old bug)."""
    await asyncio.sleep(i * CONFERENCE_POLL_S / len(confs))  # a phase, not a wait
    return await start(client, confs[i])


async def stopped_at(client: SpeakingClient, speaking_id: str) -> tuple[str, float]:
    """The stop's reason, and when the worker published it (its stream id's clock)."""
    after = "0"
    async with asyncio.timeout(ENDED_WITHIN_S + 10):
        while True:
            for entry_id, event in await client.events(speaking_id, after):
                after = entry_id
                if event.get("type") == "speaking_stopped":
                    return event.get("reason", ""), int(entry_id.split("-")[0]) / 1000


async def still_active(client: SpeakingClient, speaking_id: str) -> None:
    events = [e for _, e in await client.events(speaking_id, "0", block_ms=1)]
    stops = [e for e in events if e.get("type") == "speaking_stopped"]
    assert not stops, (speaking_id, stops)
    assert (await client.session(speaking_id))["status"] == "active", speaking_id


async def leave_and_expect_the_end(
    client: SpeakingClient, who: Participant, speaking_id: str
) -> None:
    await who.leave()
    assert who.left_at is not None
    reason, at = await stopped_at(client, speaking_id)
    print(f"ENDED {at - who.left_at:.2f} s after the last participant left")
    assert reason == "conference_ended", (speaking_id, reason)
    # Not before the grace period (the Redis stream id's clock is the host's clock too),
    # and within it plus a poll and slack.
    assert VACANCY_GRACE_S - 0.2 <= at - who.left_at <= ENDED_WITHIN_S, (
        speaking_id,
        at - who.left_at,
    )


@pytest.mark.parametrize(("kind", "tries"), [("confbridge", 30), ("ari", 10)])
async def test_one_participant_rooms_stay_until_their_participant_hangs_up(
    client: SpeakingClient, rooms: Rooms, kind: Kind, tries: int
) -> None:
    """Every try: one participant (already past its join), a session created on its
    room, active for HOLD_S; the participant hangs up and the session stops with
    conference_ended after the grace period, within its bound. Ten rooms at a time on
    one worker (two rooms at once, and more)."""
    for batch in range(0, tries, ROOMS_AT_ONCE):
        async with rooms(kind, min(ROOMS_AT_ONCE, tries - batch)) as confs:
            people = await asyncio.gather(*(conf.join() for conf in confs))
            sessions = await asyncio.gather(
                *(staggered(client, confs, i) for i in range(len(confs)))
            )
            began = time.monotonic()
            await asyncio.sleep(HOLD_S)  # the property is "nothing happens for this long"
            assert time.monotonic() - began >= HOLD_S
            for speaking_id in sessions:
                await still_active(client, speaking_id)
            ends = zip(people, sessions, strict=True)
            await asyncio.gather(*(leave_and_expect_the_end(client, p, s) for p, s in ends))


@pytest.mark.parametrize("kind", ["confbridge", "ari"])
async def test_a_participant_leaving_while_another_stays_ends_nothing(
    client: SpeakingClient, rooms: Rooms, kind: Kind
) -> None:
    """Two participants; one leaves and the session stays active past the grace period;
    the other leaves and the session stops (conference_ended, within the bound)."""
    async with rooms(kind, 3) as confs:
        pairs = [(await conf.join(), await conf.join()) for conf in confs]
        sessions = [await start(client, conf) for conf in confs]
        await asyncio.gather(*(first.leave() for first, _ in pairs))
        await asyncio.sleep(HOLD_S)  # the property is "nothing happens for this long"
        for speaking_id in sessions:
            await still_active(client, speaking_id)
        await asyncio.gather(
            *(
                leave_and_expect_the_end(client, second, s)
                for (_, second), s in zip(pairs, sessions, strict=True)
            )
        )


async def test_a_room_whose_only_participant_hears_prompts(
    client: SpeakingClient, rooms: Rooms
) -> None:
    """The participant hears ConfBridge's prompts (the only-person announcement, the
    user count, enter sounds when our channel joins): the session stays active until
    the participant hangs up, then stops as above. Five rooms at once."""
    async with rooms("confbridge", 5, prompted=True) as confs:
        people = await asyncio.gather(*(conf.join() for conf in confs))
        sessions = await asyncio.gather(*(staggered(client, confs, i) for i in range(len(confs))))
        await asyncio.sleep(HOLD_S)  # the property is "nothing happens for this long"
        for speaking_id in sessions:
            await still_active(client, speaking_id)
        for who in people:  # nothing was said: every loud frame is one of the prompts
            assert count_loud(who.received()) > 50, who.number
        await asyncio.gather(
            *(leave_and_expect_the_end(client, p, s) for p, s in zip(people, sessions, strict=True))
        )


async def test_a_lone_participant_stepping_out_and_back_in_ends_nothing(
    client: SpeakingClient, rooms: Rooms
) -> None:
    """ARI conference, one participant: the conference application takes it out of the
    bridge for about a second (as it would to play it a prompt alone, or to move it) and
    puts it back; the session stays active past the grace period, then stops when the
    participant hangs up."""
    async with rooms("ari", 1) as confs:
        conf = confs[0]
        who = await conf.join()
        speaking_id = await start(client, conf)
        bridge = f"/bridges/{conf.reference}"
        await conf.ari.request("POST", f"{bridge}/removeChannel", channel=who.channel_id)
        out = await conf.bridge()
        assert out is not None and who.channel_id not in out["channels"], out
        await asyncio.sleep(CONFERENCE_POLL_S)  # out of the room over at least one poll
        await conf.ari.request("POST", f"{bridge}/addChannel", channel=who.channel_id)
        await asyncio.sleep(HOLD_S)  # the property is "nothing happens for this long"
        await still_active(client, speaking_id)
        await leave_and_expect_the_end(client, who, speaking_id)
