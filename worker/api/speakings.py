"""The ``/speakings`` resource: every handler authenticates (middleware), validates with
the same rules as the worker (worker/commands.py), and drives the owning worker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import fields as dataclass_fields
from typing import Any

from aiohttp import web

from worker.api.catalog import Catalog, decode_token, encode_token
from worker.api.directory import Unreachable, WorkerDirectory
from worker.api.pools import RedisPools
from worker.api.problems import from_command_error, from_reply_error, not_found, problem
from worker.api.settings import ApiSettings
from worker.client import CommandTimeout, SpeakingClient
from worker.commands import Locate, is_id, parse_command, validate_text
from worker.engines.providers import not_configured
from worker.errors import CommandError
from worker.model import NEVER, ReferenceType, Speaking, Status
from worker.redis_text import as_text
from worker.session import SessionProtocol
from worker.session_messages import Persist, Received, Reply, SessionCommand
from worker.store import Keys

SPEAKING_FIELDS = [f.name for f in dataclass_fields(Speaking)]
MAX_PAGE_SIZE = 100
#: What a create request may set; anything else in the body is ignored.
CREATE_FIELDS = ("reference_type", "reference_id", "language", "provider", "voice_id", "direction")


class Speakings:
    """Handlers of the resource, sharing Redis, the worker directory and the catalog."""

    def __init__(self, settings: ApiSettings, pools: RedisPools, keys: Keys) -> None:
        self.settings = settings
        self.pools = pools
        self.redis = pools.main
        self.keys = keys
        self.directory = WorkerDirectory(pools, keys, settings.worker_stale_s)
        self.catalog = Catalog(pools.main, keys)
        self.open_streams: dict[str, int] = {}  # customer -> event streams open (SSE)
        self.in_flight: dict[str, int] = {}  # customer -> commands sent, not yet answered

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1.0/speakings", self.create),
            web.get("/v1.0/speakings", self.listing),
            web.get("/v1.0/speakings/{id}", self.get),
            web.post("/v1.0/speakings/{id}/say", self.say),
            web.post("/v1.0/speakings/{id}/flush", self.flush),
            web.post("/v1.0/speakings/{id}/stop", self.stop),
            web.delete("/v1.0/speakings/{id}", self.delete),
        ]

    # -- helpers --------------------------------------------------------------------------

    async def owned(self, request: web.Request) -> Speaking | web.Response:
        """The session named in the path, if it exists, is not deleted and is the caller's."""
        record = await self.owned_record(request)
        return record if isinstance(record, web.Response) else Speaking.from_fields(record)

    async def owned_record(self, request: web.Request) -> dict[str, str] | web.Response:
        """The stored record of the session named in the path (see ``owned``)."""
        speaking_id = request.match_info["id"]
        if not is_id(speaking_id):
            return problem(400, "invalid_argument", "speaking id is malformed")
        raw = await self.redis.hgetall(self.keys.session(speaking_id))
        record = {as_text(k): as_text(v) for k, v in raw.items()}
        if not record or record.get("tm_delete", NEVER) != NEVER:
            return not_found(speaking_id)
        if record.get("customer_id") != request["customer_id"]:
            return not_found(speaking_id)  # indistinguishable from unknown
        request["worker_id"] = record.get("worker_id", "")
        return record

    async def _send(
        self, customer_id: str, worker_id: str, kind: str, speaking_id: str, fields: dict[str, str]
    ) -> dict[str, Any] | web.Response:
        """One command to a worker, and its reply. A customer has at most
        ``max_commands_in_flight`` commands on their way at once: a worker takes its
        commands in order from one stream, so one customer's burst would otherwise delay
        every other customer's commands behind it."""
        cap = self.settings.max_commands_in_flight
        in_flight = self.in_flight.get(customer_id, 0)
        if in_flight >= cap:
            return problem(
                429,
                "limit_exceeded",
                f"{in_flight} commands of this API key's customer are already in flight; at "
                f"most {cap} are allowed at once: wait for their answers",
            )
        self.in_flight[customer_id] = in_flight + 1
        client = SpeakingClient(self.redis, worker_id, self.keys, replies=self.pools.replies)
        try:
            reply = await client.command(
                kind, speaking_id, fields, timeout_s=self.settings.command_timeout_s
            )
        except CommandTimeout:
            return problem(
                503, "unavailable", "the speaking service did not answer in time; try again"
            )
        finally:
            self.in_flight[customer_id] -= 1
            if not self.in_flight[customer_id]:
                del self.in_flight[customer_id]
        if not reply.get("ok"):
            return from_reply_error(reply.get("error", {}))
        return reply

    # -- create ---------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await _json_object(request, self.settings.body_timeout_s)
        if isinstance(body, web.Response):
            return body
        customer_id: str = request["customer_id"]
        speaking_id = str(uuid.uuid4())
        fields: dict[str, str] = {}
        for name in CREATE_FIELDS:
            if name in body:
                if not isinstance(body[name], str):
                    return problem(400, "invalid_argument", f"{name} must be a string")
                fields[name] = body[name]
        fields["provider"] = fields.get("provider") or self.settings.default_provider
        command_id = _command_id(request)
        if isinstance(command_id, web.Response):
            return command_id
        fields |= {"type": "create", "command_id": command_id, "speaking_id": speaking_id}
        fields["customer_id"] = customer_id
        try:
            parse_command(fields)  # the worker's own validation, before anything is sent
        except CommandError as exc:
            return from_command_error(exc)
        configured = await self.directory.providers()
        if fields["provider"] not in configured:
            return problem(
                400,
                "invalid_argument",
                not_configured(fields["provider"], configured),
                allowed=configured,
            )
        try:
            located = await self.directory.locate(fields["reference_type"], fields["reference_id"])
        except Unreachable:
            return problem(503, "unavailable", "the call could not be looked up now; try again")
        if located is None or (self.settings.tenancy_check and located.owner != customer_id):
            kind = "call" if fields["reference_type"] == ReferenceType.CALL.value else "conference"
            return problem(404, "not_found", f"{kind} {fields['reference_id']} not found")
        if located.reference_id:  # a call: the id Asterisk holds, so aliases share one lock
            fields["reference_id"] = located.reference_id
        reply = await self._send(customer_id, located.worker_id, "create", speaking_id, fields)
        if isinstance(reply, web.Response):
            return reply
        speaking = Speaking.from_fields(reply["speaking"])
        await self.catalog.add(speaking)
        return web.json_response(_public(speaking), status=201)

    # -- read -----------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.Response:
        owned = await self.owned(request)
        if isinstance(owned, web.Response):
            return owned
        return web.json_response(_public(owned))

    async def listing(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            page_size = int(query.get("page_size", "10"))
        except ValueError:
            page_size = -1
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            return problem(
                400, "invalid_argument", f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}"
            )
        status = query.get("status")
        if status is not None and status not in [s.value for s in Status]:
            return problem(
                400,
                "invalid_argument",
                f"status {status!r} is not one of initiating, active, stopped",
                allowed=[s.value for s in Status],
            )
        reference_type = query.get("reference_type")
        if reference_type is not None and reference_type not in [r.value for r in ReferenceType]:
            return problem(
                400,
                "invalid_argument",
                "reference_type must be call or confbridge",
                allowed=[r.value for r in ReferenceType],
            )
        below = None
        if token := query.get("page_token"):
            below = decode_token(token)
            if below is None:
                return problem(400, "invalid_argument", "page_token is not one this API issued")
        reference_id = query.get("reference_id")
        customer_id: str = request["customer_id"]
        result: list[dict[str, str]] = []
        last_score: int | None = None
        exhausted = False
        while len(result) < page_size and not exhausted:
            rows = await self.catalog.page(customer_id, below, page_size * 2)
            exhausted = len(rows) < page_size * 2
            for speaking_id, score in rows:
                below = score
                raw = await self.redis.hgetall(self.keys.session(speaking_id))
                record = {as_text(k): as_text(v) for k, v in raw.items()}
                if not record:  # expired: the catalog forgets it too
                    await self.catalog.remove(customer_id, speaking_id)
                    continue
                if record.get("tm_delete", NEVER) != NEVER:
                    continue
                if (
                    (status and record.get("status") != status)
                    or (reference_type and record.get("reference_type") != reference_type)
                    or (reference_id and record.get("reference_id") != reference_id)
                ):
                    continue
                result.append(_public(Speaking.from_fields(record)))
                last_score = score
                if len(result) == page_size:
                    break
        more = len(result) == page_size and last_score is not None
        token = encode_token(last_score) if more and last_score is not None else ""
        return web.json_response({"result": result, "next_page_token": token})

    # -- commands -------------------------------------------------------------------------

    async def say(self, request: web.Request) -> web.Response:
        body = await _json_object(request, self.settings.body_timeout_s)
        if isinstance(body, web.Response):
            return body
        text = body.get("text")
        try:
            validate_text(text if isinstance(text, str) else None)
        except CommandError as exc:
            return from_command_error(exc)
        return _summary(await self._command(request, "say", {"text": str(text)}))

    async def flush(self, request: web.Request) -> web.Response:
        return _summary(await self._command(request, "flush", {}))

    async def stop(self, request: web.Request) -> web.Response:
        reply = await self._command(request, "stop", {})
        if isinstance(reply, web.Response):
            return reply
        return web.json_response(_public(Speaking.from_fields(reply["speaking"])))

    async def delete(self, request: web.Request) -> web.Response:
        reply = await self._command(request, "delete", {})
        if isinstance(reply, web.Response):
            return reply
        deleted = Speaking.from_fields(reply["speaking"])
        await self.catalog.remove(deleted.customer_id, deleted.id)
        return web.json_response(_public(deleted))

    async def _command(
        self, request: web.Request, kind: str, fields: dict[str, str]
    ) -> dict[str, Any] | web.Response:
        """Apply a command to the caller's session: answered here by the session protocol
        when its record says no worker runs it any more (stopped: even if its worker is
        gone), else by the worker that runs it. The worker's reply, or an error response."""
        record = await self.owned_record(request)
        if isinstance(record, web.Response):
            return record
        speaking_id = record["id"]
        command_id = _command_id(request)
        if isinstance(command_id, web.Response):
            return command_id
        fields = {**fields, "command_id": command_id}
        command = parse_command({**fields, "type": kind, "speaking_id": speaking_id})
        assert not isinstance(command, Locate)
        reply = await self._answer_stored(record, command)
        if reply is None:
            sent = await self._send(
                request["customer_id"], request["worker_id"], kind, speaking_id, fields
            )
            if isinstance(sent, web.Response):
                return sent
            reply = sent
        if not reply.get("ok"):
            return from_reply_error(reply.get("error", {}))
        return reply

    async def _answer_stored(
        self, record: dict[str, str], command: SessionCommand
    ) -> dict[str, Any] | None:
        """The protocol's answer from the stored record alone, or None if only the
        session's worker can answer (it is initiating or active)."""
        protocol = SessionProtocol.restore(command.speaking_id, record)
        if protocol is None:
            return None
        reply: dict[str, Any] | None = None
        for action in protocol.handle(Received("", command)):
            match action:
                case Persist(speaking):
                    mapping: Any = speaking.to_fields()
                    await self.redis.hset(self.keys.session(speaking.id), mapping=mapping)
                case Reply(body=body):
                    reply = body
        return reply


def _command_id(request: web.Request) -> str | web.Response:
    """The id of the command a request sends. With an ``Idempotency-Key`` header it is
    derived from the key and the customer: the same request sent again (a client's retry
    after a timeout) is the same command, answered with its first answer and applied
    once. Without one, every request is a new command."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return str(uuid.uuid4())
    if not is_id(key):
        return problem(
            400,
            "invalid_argument",
            "Idempotency-Key must be 1-64 characters: letters, digits, '.', '_', ':' or '-'",
        )
    return idempotent_command_id(request["customer_id"], key)


def idempotent_command_id(customer_id: str, key: str) -> str:
    """The command id behind a customer's Idempotency-Key (customers never collide)."""
    return "k" + hashlib.sha256(f"{customer_id}\0{key}".encode()).hexdigest()[:40]


def _summary(reply: dict[str, Any] | web.Response) -> web.Response:
    """What say and flush answer: the session in short, and the segment(s) concerned."""
    if isinstance(reply, web.Response):
        return reply
    speaking = reply["speaking"]
    summary: dict[str, Any] = {
        k: speaking[k] for k in ("id", "status", "reference_type", "reference_id")
    }
    for extra in ("segment_id", "flushed"):
        if extra in reply:
            summary[extra] = reply[extra]
    return web.json_response(summary)


async def _json_object(request: web.Request, timeout_s: float) -> dict[str, Any] | web.Response:
    try:
        async with asyncio.timeout(timeout_s):  # a body sent a byte at a time is cut off
            raw = await request.read()
    except TimeoutError:
        refused = problem(
            408, "request_timeout", f"the request body did not arrive within {timeout_s:g} s"
        )
        refused.force_close()
        # Sent here and the connection closed: aiohttp would otherwise keep it open
        # waiting for the rest of the body (measured: open long after the 408).
        await refused.prepare(request)
        await refused.write_eof()
        if request.transport is not None:
            request.transport.close()
        return refused
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return problem(400, "invalid_argument", "the request body is not valid JSON")
    except RecursionError:
        return problem(400, "invalid_argument", "the request body is nested too deeply")
    if not isinstance(body, dict):
        return problem(400, "invalid_argument", "the request body must be a JSON object")
    return body


def _public(speaking: Speaking) -> dict[str, str]:
    out = speaking.to_fields()
    return {k: out[k] for k in SPEAKING_FIELDS}
