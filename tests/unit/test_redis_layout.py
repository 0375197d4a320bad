"""The key layout fits a Redis Cluster, and the Redis URLs the product accepts."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from worker.redis_retry import connect
from worker.store import Keys


@pytest.mark.parametrize("worker_id", ["pbx-1", "b-3f2a9c", "host.example.com", "w"])
def test_a_workers_transaction_keys_share_one_hash_slot(worker_id: str) -> None:
    """finish_commands writes the stream, the result and the reply in one MULTI."""
    keys = Keys()
    slots = {
        key_slot(keys.commands(worker_id).encode()),
        key_slot(keys.result(worker_id, "cmd-1").encode()),
        key_slot(keys.reply(worker_id, "cmd-2").encode()),
    }
    assert len(slots) == 1


def test_different_workers_spread_over_slots() -> None:
    keys = Keys()
    slots = {key_slot(keys.commands(f"worker-{n}").encode()) for n in range(50)}
    assert len(slots) > 40


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        Keys("speaking{x}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/speaking/x", "service name"),
        ("redis+sentinel://127.0.0.1/speaking", "host:port"),
        ("redis+cluster://127.0.0.1:7000,nohost", "host:port"),
    ],
)
def test_malformed_distributed_urls_say_what_is_expected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connect(url, 4, 1.0)


async def test_urls_of_each_kind_make_a_client_without_connecting() -> None:
    for url in (
        "redis://127.0.0.1:1/0",
        "redis+sentinel://:secret@127.0.0.1:1,127.0.0.1:2/speaking/2",
        "redis+cluster://127.0.0.1:1,127.0.0.1:2",
    ):
        client = connect(url, 4, 1.0)
        await client.aclose()


def test_a_full_pool_is_not_taken_for_a_failed_redis() -> None:
    """A sender re-sends a command only when Redis failed under it, never because its
    own connection pool was busy (which would multiply a locate's fan-out)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import MaxConnectionsError, ResponseError

    from worker.redis_retry import pool_exhausted, unblocked_by_failover

    assert pool_exhausted(RedisConnectionError("No connection available."))
    assert pool_exhausted(MaxConnectionsError("Too many connections"))
    assert not pool_exhausted(RedisConnectionError("Error 111 connecting. Connection refused."))
    assert unblocked_by_failover(ResponseError("UNBLOCKED force unblock from blocking operation"))
    assert not unblocked_by_failover(ResponseError("WRONGTYPE Operation against a key"))


def test_sharded_event_streams_spread_over_slots_and_keep_a_session_on_one() -> None:
    keys = Keys(event_shards=16)
    streams = keys.event_streams()
    assert len(set(streams)) == 16 and len({key_slot(s.encode()) for s in streams}) == 16
    ids = [f"00000000-0000-0000-0000-{n:012d}" for n in range(200)]
    assert {keys.events_of(i) for i in ids} == set(streams)  # every shard gets sessions
    assert all(keys.events_of(i) == keys.events_of(i) for i in ids)
    assert Keys().events_of(ids[0]) == Keys().events() == "speaking:events"  # unsharded


@pytest.mark.parametrize("shards", [0, 1025])
def test_event_shards_out_of_range_are_refused(shards: int) -> None:
    with pytest.raises(
        ValueError, match=r"event shards \(SPEAKING_EVENT_SHARDS\) must be 1 to 1024"
    ):
        Keys(event_shards=shards)
