"""Pure core: the direction -> whisper table, and the Speaking record's edge format."""

from __future__ import annotations

from worker.direction import Direction, Whisper, whisper_for
from worker.model import Provider, ReferenceType, Speaking, Status


def test_whisper_follows_the_measured_table() -> None:
    # Whisper "out" on the referenced channel's snoop = that channel's own (remote) party hears.
    assert whisper_for(Direction.IN) is Whisper.OUT
    assert whisper_for(Direction.OUT) is Whisper.IN
    assert whisper_for(Direction.BOTH) is Whisper.BOTH


def test_speaking_is_typed_inside_and_plain_strings_at_the_edge() -> None:
    speaking = Speaking(
        "s1", "c1", ReferenceType.CALL, "ch1", "en-US", Provider.OFFLINE, "", Direction.BOTH
    )
    fields = speaking.to_fields()
    assert fields["status"] == "initiating" and fields["direction"] == "both"
    assert fields["tm_update"] == fields["tm_create"]
    assert len(speaking.tm_create) == len("2025-06-15 14:30:00.123456")
    assert speaking.tm_create[4] == "-" and speaking.tm_create[10] == " "
    restored = Speaking.from_fields(fields | {"worker_id": "w1"})
    assert restored == speaking and restored.status is Status.INITIATING
