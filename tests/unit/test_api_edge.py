"""The API's TCP edge (worker/api/edge.py), pure parts: connection counts per client
and overall, and the 503 a refused connection gets."""

from __future__ import annotations

import json

from worker.api.edge import ConnectionCounts, EdgeLimits, refusal_bytes


def test_connections_are_bounded_per_client_and_overall() -> None:
    counts = ConnectionCounts(EdgeLimits(max_connections=3, max_per_client=2))
    assert counts.admit("10.0.0.1") is None
    assert counts.admit("10.0.0.1") is None
    refused = counts.admit("10.0.0.1")
    assert refused is not None and "at most 2" in refused
    assert counts.admit("10.0.0.2") is None
    refused = counts.admit("10.0.0.3")
    assert refused is not None and "(3)" in refused
    assert counts.total == 3  # refusals are not counted
    counts.release("10.0.0.1")
    assert counts.admit("10.0.0.3") is None
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        counts.release(client)
    assert counts.total == 0 and counts.by_client == {}


def test_a_refused_connection_gets_a_complete_503_that_says_why() -> None:
    raw = refusal_bytes("too many connections from your address (at most 2)")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    error = json.loads(body)["error"]
    assert error == {
        "code": "unavailable",
        "message": "too many connections from your address (at most 2)",
    }
