"""Runs one live session: its commands in order, its media, its player.

One task per session (never per frame). Commands for a session are applied in
the order they were read from the stream; a hangup noticed from ARI enters the
same inbox, so a stop can never overtake a say that came before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from worker.ari import AriError
from worker.call_media import RESOURCE_PREFIX, CallMedia
from worker.commands import AnyCommand, Create, Delete, Flush, Say, Stop
from worker.direction import whisper_for
from worker.errors import CommandError, ErrorCode, conflict
from worker.events import Event, EventType
from worker.media_format import media_format_for
from worker.model import ReferenceType, Speaking, Status, StopReason
from worker.player import Player, Segment, SegmentProblem
from worker.playout import Playout, PlayoutEvent, PlayoutEventKind
from worker.session import SessionState

if TYPE_CHECKING:
    from worker.worker import Worker

log = logging.getLogger(__name__)

#: How long a create waits for the ARI events connection to come back.
ARI_WAIT_S = 10.0


@dataclass(frozen=True)
class Inbound:
    """A command read from the stream, to be answered and acknowledged once applied."""

    entry_id: str
    command: AnyCommand


class SessionRunner:
    """The live half of a session: state, Asterisk resources, playback."""

    def __init__(self, worker: Worker, create: Create) -> None:
        self.worker = worker
        self.create = create
        self.state = SessionState(
            Speaking(
                id=create.speaking_id,
                customer_id=create.customer_id,
                reference_type=create.reference_type.value,
                reference_id=create.reference_id,
                language=create.language,
                provider=create.provider.value,
                voice_id=create.voice_id,
                direction=create.direction.value,
            )
        )
        self.inbox: asyncio.Queue[Inbound | StopReason] = asyncio.Queue()
        self.media = CallMedia(
            worker.ari,
            worker.waiters,
            f"{RESOURCE_PREFIX}{create.speaking_id}",
            create.reference_id,
        )
        self.playout: Playout | None = None
        self.player: Player | None = None
        self.hangup_seen = False
        self._said: dict[str, float] = {}  # segment id -> when its say was applied
        self._reference_key = worker.store.keys.reference(
            create.reference_type.value, create.reference_id
        )

    @property
    def speaking_id(self) -> str:
        return self.create.speaking_id

    @property
    def channel_ids(self) -> tuple[str, ...]:
        """Channels whose end means the session must stop."""
        return (self.create.reference_id, self.media.snoop_id, self.media.media_id)

    def channel_gone(self) -> None:
        """ARI says the call or one of our channels ended. Called from the event
        dispatcher: must not await (it queues a stop behind earlier commands)."""
        if not self.hangup_seen and self.state.status is not Status.STOPPED:
            self.hangup_seen = True
            self.inbox.put_nowait(StopReason.HANGUP)

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self, first: Inbound) -> None:
        try:
            if await self._start(first):
                while self.state.status is not Status.STOPPED:
                    item = await self.inbox.get()
                    if isinstance(item, StopReason):
                        await self._stop(item)
                    else:
                        await self._apply(item)
        except asyncio.CancelledError:
            await self._stop(StopReason.SHUTDOWN)
            raise
        except Exception:
            log.exception("session failed", extra={"speaking_id": self.speaking_id})
            await self._stop(StopReason.SETUP_FAILED)
        finally:
            await self.worker.runner_done(self)

    async def _start(self, first: Inbound) -> bool:
        """Validate against the live call, take the call's lock, answer the create,
        then build the media path. False if the create was refused."""
        create = self.create
        try:
            engine, voice = self.worker.engines.resolve(
                create.provider, create.language, create.voice_id
            )
            if create.reference_type is not ReferenceType.CALL:
                raise CommandError(
                    ErrorCode.INVALID,
                    "reference_type confbridge is not supported by this worker yet; use call",
                    ["call"],
                )
            await self._check_call()
            holder = await self.worker.store.claim_reference(self._reference_key, self.speaking_id)
            if holder is not None:
                raise conflict(
                    f"speaking {holder} is already initiating or active on call "
                    f"{create.reference_id}; stop it first",
                    existing_speaking_id=holder,
                )
        except CommandError as exc:
            await self.worker.reply_error(first.entry_id, create.command_id, exc)
            return False
        except (AriError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self.worker.reply_error(first.entry_id, create.command_id, _unavailable(exc))
            return False
        # voice_id stays as asked ("" = the provider's default, as the public document
        # shows); the voice actually used is recorded beside it.
        await self.worker.store.save(self.state.speaking, voice=voice.voice_id)
        await self.worker.reply_ok(first.entry_id, create.command_id, self.state.speaking)

        started = time.monotonic()
        try:
            native = await self.worker.ari.get_variable(
                create.reference_id, "CHANNEL(audionativeformat)"
            )
            fmt = media_format_for(
                native or "", transport_carries_slin16=self.worker.settings.wideband_websocket
            )
            fmt, _ = await asyncio.gather(
                self.media.setup(
                    whisper_for(create.direction),
                    fmt,
                    self.worker.settings.rtp_host,
                ),
                engine.prepare(voice),
            )
        except Exception as exc:
            reason = StopReason.HANGUP if self.hangup_seen else StopReason.SETUP_FAILED
            log.warning(
                "session setup failed",
                extra={"speaking_id": self.speaking_id, "error": str(exc)[:200]},
            )
            await self._stop(reason, error=str(exc)[:200])
            return False
        if not self.state.activate():
            return False
        self.playout = Playout(
            fmt, self.media.send, self._on_playout, time.monotonic, rtp=self.media.rtp is not None
        )
        self.player = Player(engine, voice, self.playout, self._on_segment_problem)
        self.player.start()
        self.worker.pacer.add(self.playout)
        setup_ms = (time.monotonic() - started) * 1000
        self.worker.metrics.observe("speaking_setup_seconds", setup_ms / 1000)
        await self.worker.store.save(self.state.speaking, media_format=fmt.asterisk_name)
        self.worker.emit(
            Event(
                EventType.SPEAKING_STARTED,
                self.speaking_id,
                {"setup_ms": f"{setup_ms:.1f}", "media_format": fmt.asterisk_name},
            )
        )
        return True

    async def _check_call(self) -> None:
        # Without the events websocket the app is not registered in Asterisk (after an
        # Asterisk restart, until the reconnect): give it a moment, then refuse clearly.
        try:
            async with asyncio.timeout(ARI_WAIT_S):
                await self.worker.ari.connected.wait()
        except TimeoutError:
            raise CommandError(
                ErrorCode.UNAVAILABLE, "Asterisk is not reachable from the worker; try again"
            ) from None
        channel = await self.worker.ari.get_channel(self.create.reference_id)
        if channel is None:
            raise CommandError(
                ErrorCode.NOT_FOUND,
                f"call {self.create.reference_id} does not exist on this Asterisk",
            )
        if channel.get("state") != "Up":
            raise conflict(
                f"call {self.create.reference_id} is not answered (state {channel.get('state')}); "
                "a speaking session needs a call in progress (Up)",
                call_state=str(channel.get("state")),
            )

    async def _stop(self, reason: StopReason, error: str = "") -> None:
        """Silence, tear down everything created in Asterisk, record, announce."""
        if not self.state.stop(reason):
            return
        if self.playout is not None:
            self.worker.pacer.remove(self.playout)
            self.worker.metrics.inc("speaking_frames_sent_total", self.playout.frames_sent)
        if self.player is not None:
            await self.player.close(reason.value)
        await self.media.teardown()
        await self.worker.store.save(self.state.speaking, stop_reason=reason.value)
        await self.worker.store.release_reference(self._reference_key, self.speaking_id)
        data = {"reason": reason.value} | ({"error": error} if error else {})
        self.worker.emit(Event(EventType.SPEAKING_STOPPED, self.speaking_id, data))

    # -- commands -----------------------------------------------------------------------

    async def _apply(self, inbound: Inbound) -> None:
        command = inbound.command
        try:
            extra: dict[str, object] = {}
            match command:
                case Say():
                    self.state.require_active("say")
                    extra["segment_id"] = self._say(command)
                case Flush():
                    self.state.require_active("flush")
                    assert self.player is not None
                    extra["flushed"] = await self.player.flush()
                case Stop():
                    await self._stop(StopReason.STOP)
                case Delete():
                    await self._stop(StopReason.DELETE)
                    self.state.delete()
                    await self.worker.store.save(self.state.speaking)
                case Create():
                    pass  # a repeated create for this session: answer with its state
        except CommandError as exc:
            await self.worker.reply_error(inbound.entry_id, command.command_id, exc)
            return
        except Exception as exc:  # every command is answered, whatever went wrong
            log.exception("command failed", extra={"speaking_id": self.speaking_id})
            await self.worker.reply_error(inbound.entry_id, command.command_id, _unavailable(exc))
            return
        await self.worker.reply_ok(
            inbound.entry_id, command.command_id, self.state.speaking, **extra
        )

    def _say(self, say: Say) -> str:
        # The command id is the segment id: a replayed say finds it and adds nothing.
        if say.command_id not in self._said:
            assert self.player is not None
            self._said[say.command_id] = time.monotonic()
            self.player.enqueue(Segment(say.command_id, say.text))
        return say.command_id

    # -- playback callbacks (called from the clock tick: must not await) ----------------

    def _on_playout(self, event: PlayoutEvent) -> None:
        if event.kind is PlayoutEventKind.SEGMENT_STARTED:
            latency = event.at - self._said.get(event.segment_id, event.at)
            self.worker.metrics.observe("speaking_first_audio_seconds", latency)
            self.worker.emit(
                Event(
                    EventType.SEGMENT_STARTED,
                    self.speaking_id,
                    {"segment_id": event.segment_id, "latency_ms": f"{latency * 1000:.1f}"},
                )
            )
        else:
            assert self.player is not None
            self.player.notify_finished(event.segment_id)
            self.worker.emit(
                Event(
                    EventType.SEGMENT_FINISHED, self.speaking_id, {"segment_id": event.segment_id}
                )
            )

    def _on_segment_problem(self, problem: SegmentProblem) -> None:
        kind = EventType.SEGMENT_FAILED if problem.failed else EventType.SEGMENT_FLUSHED
        self.worker.emit(
            Event(
                kind, self.speaking_id, {"segment_id": problem.segment_id, "reason": problem.reason}
            )
        )


def _unavailable(exc: BaseException) -> CommandError:
    return CommandError(
        ErrorCode.UNAVAILABLE, f"the worker could not complete the command ({type(exc).__name__})"
    )
