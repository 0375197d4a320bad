"""Carries out one session's protocol (worker/session.py) against ARI, Redis and audio.

One runner task per session id, and never per frame. It takes the session's commands in
stream order, feeds them to the protocol, and carries out the actions that come back;
outcomes (the media came up, a teardown step failed, a segment finished) are fed back
in as inputs through the same inbox, so the protocol sees one ordered history.

Concurrency invariants:
* Only this task calls ``protocol.handle``; the clock tick and ARI dispatch only post to
  the inbox (never await), so a tick is never slowed by a session's I/O.
* Long actions (building the media path, teardown steps) run as background tasks that
  post their outcome; meanwhile commands are still answered (say while initiating is
  refused at once, a second stop waits for the first). At most one of them runs at a
  time, and the teardown of the media first waits for its build to end.
* Redis writes are retried through an outage; ARI steps of a teardown are retried, as the
  protocol says, until Asterisk confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from worker.admission import Usage
from worker.ari import AriError
from worker.call_media import CallMedia
from worker.commands import Create
from worker.conference_media import ConferenceMedia
from worker.direction import whisper_for
from worker.engines.base import Engine, EngineError, Synthesis, Voice
from worker.errors import CommandError, ErrorCode, conflict, unavailable
from worker.events import Event
from worker.media_format import MediaFormat, media_format_for
from worker.media_path import MediaPath
from worker.model import ReferenceType
from worker.redis_retry import retry_through_outage
from worker.resources import ARI_FAILURES
from worker.session import Phase, ProtocolViolation, SessionProtocol
from worker.session_messages import (
    Action,
    BuildMedia,
    CallChecked,
    CheckCall,
    ClaimLock,
    Enqueue,
    Flushed,
    FlushPlayback,
    Inbound,
    Input,
    InternalError,
    LockClaimed,
    Persist,
    Publish,
    Received,
    Reply,
    SetupDone,
    SetupFailed,
    StartPlayback,
    Step,
    StepDone,
    StepFailed,
    TearDown,
)
from worker.session_playback import SessionPlayback
from worker.session_services import SessionServices

log = logging.getLogger(__name__)

#: How long a create waits for the ARI events connection to come back.
ARI_WAIT_S = 10.0


class SessionRunner:
    """The live half of one session id: its protocol, Asterisk resources and playback."""

    def __init__(
        self,
        speaking_id: str,
        services: SessionServices,
        on_done: Callable[[SessionRunner, list[Inbound]], None],
    ) -> None:
        self.speaking_id = speaking_id
        self.services = services
        self._on_done = on_done
        self._inbox: deque[Inbound | Input] = deque()
        self._wake = asyncio.Event()
        self.pending_commands = 0  # commands posted and not yet taken (bounded by the worker)
        self.protocol: SessionProtocol | None = None
        self._loaded = False
        self._engine: Engine | None = None
        self._voice: Voice | None = None
        self._syntheses: list[Synthesis] = []
        self.media: MediaPath | None = None
        self._lock_id: str | None = None  # a restored session's lock (from its record)
        self._format: MediaFormat | None = None
        self.playback: SessionPlayback | None = None
        self._build: asyncio.Task[None] | None = None
        self._step: asyncio.Task[None] | None = None

    # -- what the worker sees ---------------------------------------------------------------

    def post(self, item: Inbound | Input) -> None:
        """Queue a command or an outcome. Never awaits: callable from the clock tick."""
        if isinstance(item, Inbound):
            self.pending_commands += 1
        self._inbox.append(item)
        self._wake.set()

    @property
    def live(self) -> bool:
        return self.protocol is not None and self.protocol.live

    @property
    def usage(self) -> Usage | None:
        """The provider and voice this session synthesizes with (None before its create
        was admitted, or for a session restored from its record)."""
        if self.protocol is None or self._voice is None:
            return None
        return Usage(self.protocol.speaking.provider, self._voice.voice_id)

    @property
    def active(self) -> bool:
        return self.protocol is not None and self.protocol.phase is Phase.ACTIVE

    def watched(self, create: Create) -> tuple[str, ...]:
        """Event keys (channel ids, ``bridge:<id>``) whose end means the session must stop."""
        return self._media_for(create).watched()

    @property
    def settled(self) -> MediaPath | None:
        """The media path once it is built (none while it is being made or torn down)."""
        building = self._build is not None and not self._build.done()
        return None if building or self.protocol is None else self.media

    @property
    def reference_key(self) -> str | None:
        """The Redis key of the reference lock this session holds (None before a create)."""
        if self.protocol is None:
            return None
        speaking = self.protocol.speaking
        lock_id = self.media.lock_id if self.media is not None else self._lock_id
        return self.services.store.keys.reference(
            speaking.reference_type.value, lock_id or speaking.reference_id
        )

    def _media_for(self, create: Create) -> MediaPath:
        services = self.services
        if create.reference_type is ReferenceType.CONFBRIDGE:
            return ConferenceMedia(
                services.ari,
                services.waiters,
                self._prefix(),
                create.reference_id,
                services.confbridge_context,
            )
        return CallMedia(
            services.ari,
            services.waiters,
            self._prefix(),
            create.reference_id,
            whisper_for(create.direction),
        )

    def _prefix(self) -> str:
        return f"speaking-{self.services.resource_tag}-{self.speaking_id}"

    # -- the task -----------------------------------------------------------------------------

    async def run(self) -> None:
        leftovers: list[Inbound] = []
        try:
            while True:
                while not self._inbox:
                    self._wake.clear()
                    await self._wake.wait()
                item = self._inbox.popleft()
                if isinstance(item, Inbound):
                    self.pending_commands -= 1
                    await self._command(item)
                else:
                    await self._feed(item)
                # Checked and unregistered (on_done, below) with no await in between, so
                # nothing is ever posted to a runner that has finished.
                if self._finished() and not self._inbox:
                    break
        except Exception:
            log.exception("session runner failed", extra={"speaking_id": self.speaking_id})
        finally:
            for task in (self._build, self._step):
                if task is not None:
                    task.cancel()
            leftovers = [i for i in self._inbox if isinstance(i, Inbound)]
            self._on_done(self, leftovers)

    def _finished(self) -> bool:
        busy = any(t is not None and not t.done() for t in (self._build, self._step))
        return not busy and (self.protocol is None or self.protocol.finished)

    async def _command(self, inbound: Inbound) -> None:
        command = inbound.command
        store = self.services.store
        previous = await retry_through_outage(lambda: store.result_of(command.command_id))
        if previous is not None:  # a replay: the original answer, and nothing changes
            self.services.replies.answer(command.command_id, previous, inbound.entry_id)
            return
        if inbound.expired(time.time() * 1000):
            error = unavailable("the command expired before it could be applied; nothing was done")
            await self._reply(_refusal(inbound, error))
            return
        try:
            if not self._loaded:
                refusal = await self._load(inbound)
                if refusal is not None:
                    await self._reply(Reply(inbound.entry_id, command.command_id, refusal))
                    return
            if self.protocol is None:
                record = await retry_through_outage(lambda: store.load(self.speaking_id)) or {}
                # Only a stale command can get here (say, a create replayed after its session
                # moved): the worker running it is not named to the customer.
                log.warning(
                    "command for a session run elsewhere", extra={"owner": record.get("worker_id")}
                )
                error = conflict(f"speaking {self.speaking_id} is handled by another server")
                await self._reply(_refusal(inbound, error))
                return
            await self._feed(Received(inbound.entry_id, command))
        except Exception as exc:  # answered, whatever went wrong: a command is never lost
            log.exception("command failed", extra={"speaking_id": self.speaking_id})
            error = CommandError(
                ErrorCode.INTERNAL, f"the worker failed to apply the command ({type(exc).__name__})"
            )
            await self._reply(_refusal(inbound, error))

    async def _load(self, inbound: Inbound) -> dict[str, Any] | None:
        """Set up the protocol from the first command: a new session for a create of an
        unknown id, else the stored record's rules. A refusal body if the create is invalid
        here (capacity, provider, voice)."""
        self._loaded = True
        services = self.services
        record = await retry_through_outage(lambda: services.store.load(self.speaking_id))
        command = inbound.command
        if record or not isinstance(command, Create):
            self.protocol = SessionProtocol.restore(self.speaking_id, record or {})
            self._lock_id = (record or {}).get("reference_lock")
            return None
        try:
            # Resolved first: the capacity of an offline voice depends on which engine
            # speaks it, and a voice that cannot be served is invalid at any load.
            engine, voice = services.engines.resolve(
                command.provider, command.language, command.voice_id
            )
            if (refused := services.admit(Usage(command.provider, voice.voice_id))) is not None:
                raise refused
            self._engine, self._voice = engine, voice
        except CommandError as exc:
            return {"ok": False, "command_id": command.command_id, "error": exc.to_dict()}
        self.protocol = SessionProtocol.for_create(command, limits=services.limits)
        self.media = self._media_for(command)
        return None

    # -- feeding the protocol ---------------------------------------------------------------

    async def _feed(self, event: Input) -> None:
        assert self.protocol is not None
        log.debug("input", extra={"speaking_id": self.speaking_id, "input": repr(event)[:200]})
        try:
            actions = self.protocol.handle(event)
        except ProtocolViolation:
            log.exception("protocol violation", extra={"speaking_id": self.speaking_id})
            if isinstance(event, Received):
                error = CommandError(ErrorCode.INTERNAL, "the worker could not apply the command")
                await self._reply(_refusal(Inbound(event.entry_id, event.command), error))
            return
        for action in actions:
            try:
                await self._do(action)
            except Exception as exc:
                if isinstance(action, Reply):
                    raise  # the caller answers with internal_error
                log.exception("action failed", extra={"action": type(action).__name__})
                self.post(InternalError(f"{type(action).__name__}: {type(exc).__name__}"))

    async def _do(self, action: Action) -> None:
        log.debug("action", extra={"speaking_id": self.speaking_id, "action": repr(action)[:200]})
        services = self.services
        match action:
            case CheckCall():
                await self._feed(CallChecked(await self._check_reference()))
            case ClaimLock():
                key = self.reference_key
                assert key is not None
                holder = await retry_through_outage(
                    lambda: services.store.claim_reference(key, self.speaking_id)
                )
                await self._feed(LockClaimed(holder))
            case Persist(record, extra):
                if self._voice is not None:
                    extra = {"voice": self._voice.voice_id, **extra}
                if self.media is not None:  # the lock a restarted worker must release
                    extra = {"reference_lock": self.media.lock_id, **extra}
                await retry_through_outage(lambda: services.store.save(record, **extra))
            case Reply():
                await self._reply(action)
            case Publish(kind, data):
                services.emit(Event(kind, self.speaking_id, data))
            case BuildMedia():
                self._build = asyncio.create_task(self._build_media(), name="session-setup")
            case StartPlayback():
                assert self.media is not None and self._format is not None
                self.playback = SessionPlayback(
                    self._format,
                    self.media.send,
                    self.media.paced_by_us,
                    self._syntheses,
                    services.pacer,
                    services.metrics,
                    self.post,
                    services.cache,
                    chunk_frames=self.media.chunk_frames,
                    on_clear=self.media.clear_transport,
                )
            case Enqueue(segment_id, text):
                assert self.playback is not None
                self.playback.enqueue(segment_id, text)
            case FlushPlayback(entry_id, command_id):
                assert self.playback is not None
                flushed = await self.playback.flush()
                await self._feed(Flushed(entry_id, command_id, tuple(flushed)))
            case TearDown():
                self._step = asyncio.create_task(self._teardown(action), name="session-teardown")

    async def _reply(self, reply: Reply) -> None:
        if not reply.body.get("ok"):
            error = reply.body.get("error", {})
            log.info("command refused", extra={"command_id": reply.command_id, "error": error})
        self.services.replies.answer(reply.command_id, reply.body, reply.entry_id)

    # -- actions that talk to Asterisk --------------------------------------------------------

    async def _check_reference(self) -> CommandError | None:
        assert self.media is not None
        try:
            # Without the events websocket the app is not registered in Asterisk (after an
            # Asterisk restart, until the reconnect): give it a moment, then refuse clearly.
            async with asyncio.timeout(ARI_WAIT_S):
                await self.services.ari.connected.wait()
            return await self.media.check()
        except ARI_FAILURES as exc:
            return unavailable(f"Asterisk did not answer ({type(exc).__name__}); try again")

    async def _build_media(self) -> None:
        assert self.protocol is not None and self.media is not None
        assert self._voice is not None
        services, speaking = self.services, self.protocol.speaking
        started = time.monotonic()
        try:
            native = await self.media.native_formats()
            fmt = media_format_for(native, services.wideband_websocket)
            # Synthesis at the call's rate, where the provider can (no resampling).
            self._syntheses = services.engines.open(speaking.provider, self._voice, fmt.rate)
            # Both or neither: if one fails the other is cancelled, and teardown removes
            # whatever the media setup had created.
            async with asyncio.TaskGroup() as group:
                websocket = services.narrowband_websocket or fmt is MediaFormat.SLIN16
                setup = group.create_task(self.media.setup(fmt, services.rtp_host, websocket))
                group.create_task(self._syntheses[0].prepare())
            for fallback in self._syntheses[1:]:  # best effort: tried only if needed
                with contextlib.suppress(Exception):
                    await fallback.prepare()
        except Exception as exc:
            cause = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
            log.warning(
                "session setup failed",
                extra={"speaking_id": self.speaking_id, "error": str(cause)[:200]},
            )
            self.post(SetupFailed(public_reason(cause)))
            return
        self._format = setup.result()
        setup_s = time.monotonic() - started
        services.metrics.observe("speaking_setup_seconds", setup_s)
        self.post(SetupDone(self._format.asterisk_name, setup_s * 1000))

    async def _teardown(self, action: TearDown) -> None:
        if action.delay_s:
            await asyncio.sleep(action.delay_s)
        services = self.services
        try:
            match action.step:
                case Step.SILENCE:
                    playback, self.playback = self.playback, None
                    if playback is not None:
                        await playback.close(action.reason.value)
                    syntheses, self._syntheses = self._syntheses, []
                    for synthesis in syntheses:  # the provider connections of the session
                        with contextlib.suppress(Exception):
                            await synthesis.close()
                case Step.MEDIA:
                    if self._build is not None:  # never tear down what is still being built
                        self._build.cancel()
                        await asyncio.gather(self._build, return_exceptions=True)
                    if self.media is not None:
                        await self.media.teardown()
                case Step.RECORD:
                    extra = {"stop_reason": action.reason.value}
                    await services.store.save(action.speaking, **extra)
                case Step.RELEASE:
                    key = self.reference_key
                    assert key is not None
                    await services.store.release_reference(key, self.speaking_id)
        except Exception as exc:
            log.warning(
                "teardown step failed; retrying",
                extra={"step": action.step.value, "error": f"{type(exc).__name__}: {exc}"[:200]},
            )
            self.post(StepFailed(action.step, f"{type(exc).__name__}: {exc}"[:200]))
        else:
            self.post(StepDone(action.step))


def public_reason(error: BaseException) -> str:
    """Why something failed, fit for a customer (it reaches them in speaking_stopped): no
    ARI path, host or other internal detail, which stay in the worker's log."""
    if isinstance(error, AriError):
        return f"Asterisk refused a request (status {error.status})"
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return "Asterisk did not answer in time"
    if isinstance(error, aiohttp.ClientError | OSError):
        return "Asterisk could not be reached"
    if isinstance(error, EngineError):
        return f"the speech engine failed: {error}"  # engine messages are customer-safe
    return f"internal error ({type(error).__name__})"


def _refusal(inbound: Inbound, error: CommandError) -> Reply:
    return Reply.refusal(inbound.entry_id, inbound.command.command_id, error)
