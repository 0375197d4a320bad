"""``GET /speakings/{id}/events``: a session's events as Server-Sent Events.

Reads the session's Redis stream (``speaking:events:{id}``) from the start, or after
``Last-Event-ID``, and ends after ``speaking_stopped``. A comment line every 15 s keeps
proxies from closing an idle stream.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from aiohttp import web

from worker.api.problems import problem
from worker.api.speakings import Speakings
from worker.redis_retry import REDIS_OUTAGE
from worker.redis_text import as_text

KEEPALIVE_MS = 15_000
_STREAM_ID = re.compile(r"[0-9]{1,19}(-[0-9]{1,19})?")


async def stream_events(speakings: Speakings, request: web.Request) -> web.StreamResponse:
    owned = await speakings.owned(request)
    if isinstance(owned, web.Response):
        return owned
    after = request.headers.get("Last-Event-ID", "0") or "0"
    if not _STREAM_ID.fullmatch(after):
        return problem(400, "invalid_argument", "Last-Event-ID must be an id this stream sent")
    customer: str = request["customer_id"]
    cap = speakings.settings.max_event_streams_per_customer
    open_now = speakings.open_streams.get(customer, 0)
    if open_now >= cap:
        return problem(
            429,
            "limit_exceeded",
            f"this API key's customer already has {open_now} event streams open; at most "
            f"{cap} are allowed: close one, or follow several sessions by polling",
        )
    if sum(speakings.open_streams.values()) >= speakings.settings.max_event_streams:
        return problem(503, "unavailable", "too many event streams are open; try again later")
    speakings.open_streams[customer] = open_now + 1
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        # The client went away, or Redis did: the stream ends and the client resumes
        # with Last-Event-ID.
        with contextlib.suppress(ConnectionResetError, *REDIS_OUTAGE):
            await _pump(speakings, response, owned.id, after)
        return response
    finally:
        speakings.open_streams[customer] -= 1
        if not speakings.open_streams[customer]:
            del speakings.open_streams[customer]


async def _pump(
    speakings: Speakings, response: web.StreamResponse, speaking_id: str, after: str
) -> None:
    key = speakings.keys.session_events(speaking_id)
    session = speakings.keys.session(speaking_id)
    while True:
        # A stopped session gets no new events: read what is left without waiting, then end
        # (a client resuming after speaking_stopped must not hang).
        stopped = as_text(await speakings.redis.hget(session, "status") or b"") == "stopped"
        reply: Any = await speakings.pools.streams.xread(
            {key: after}, block=None if stopped else KEEPALIVE_MS, count=100
        )
        if not reply:
            if stopped:
                await response.write_eof()
                return
            await response.write(b": keep-alive\n\n")
            continue
        for entry_id, raw in reply[0][1]:
            after = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            event = {as_text(k): as_text(v) for k, v in raw.items()}
            data = json.dumps(event, separators=(",", ":"))
            await response.write(
                f"id: {after}\nevent: {event.get('type', 'message')}\ndata: {data}\n\n".encode()
            )
            if event.get("type") == "speaking_stopped":
                await response.write_eof()
                return
