"""The worker: reads commands from Redis, routes them to session runners, routes
ARI events to the sessions they concern, and publishes events.

Concurrency invariants:
* One task reads the command stream; each live session has one runner task that
  applies its commands in stream order. Sessions never wait for each other.
* ARI events are dispatched synchronously in arrival order (see ``AriClient``).
* ``runners`` and ``by_channel`` are only changed without awaiting in between a
  check and the change, so a command or event is never routed to a runner that
  has already finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from worker.ari import AriClient
from worker.call_media import ChannelWaiters, sweep_leftovers
from worker.commands import AnyCommand, Create, Delete, Flush, Locate, Say, Stop, parse_command
from worker.config import Settings
from worker.engines.registry import EngineRegistry
from worker.errors import CommandError, ErrorCode, conflict
from worker.events import Event, EventType
from worker.metrics import Registry
from worker.model import NEVER, Speaking, Status, StopReason, timestamp
from worker.pacer import Pacer
from worker.runner import Inbound, SessionRunner
from worker.store import Store

log = logging.getLogger(__name__)

_GONE_EVENTS = {"ChannelDestroyed", "ChannelHangupRequest", "StasisEnd"}


class Worker:
    """One worker beside one Asterisk."""

    def __init__(
        self, settings: Settings, store: Store, engines: EngineRegistry, metrics: Registry
    ) -> None:
        self.settings = settings
        self.store = store
        self.engines = engines
        self.metrics = metrics
        self.ari = AriClient(
            settings.ari_url,
            settings.ari_user,
            settings.ari_password,
            settings.ari_app,
            on_event=self.on_ari_event,
            on_connect=self._on_ari_connect,
        )
        self.pacer = Pacer()
        self.waiters = ChannelWaiters()
        self.runners: dict[str, SessionRunner] = {}
        self.by_channel: dict[str, SessionRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._background: list[asyncio.Task[None]] = []
        self._ari_connections = 0
        self.ready = asyncio.Event()
        _describe(metrics)

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect and recover, then serve. Waits for as long as Asterisk is unreachable
        (``/healthz`` says why meanwhile): a worker beside a down Asterisk has nothing to
        do, and exiting would only need a human to start it again."""
        await self.ari.start()
        await self.ari.connected.wait()
        await self.store.ensure_group()
        await self._recover()
        self.pacer.start()
        self._background = [
            asyncio.create_task(self._publish_events(), name="events"),
            asyncio.create_task(self._read_commands(), name="commands"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self.engines.warm_up(), name="warm-up"),
        ]
        self.ready.set()
        log.info("worker ready", extra={"worker_id": self.store.worker_id})

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop reading commands, stop every session (reason shutdown), clean up."""
        reader = self._background[1] if self._background else None
        if reader:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for runner in list(self.runners.values()):
            runner.inbox.put_nowait(StopReason.SHUTDOWN)
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in pending:  # a runner stuck on Asterisk: cancelling still tears down
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._events.join()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(ConnectionError, OSError):
            await self.store.unregister()  # after the heartbeat task, which would re-add it
        await self.pacer.stop()
        await self.ari.close()
        log.info("worker stopped", extra={"worker_id": self.store.worker_id})

    async def _recover(self) -> None:
        """Sessions this worker owned before a crash cannot be resumed: the RTP sockets
        died with the process. Mark them stopped and remove what Asterisk still holds."""
        for speaking_id in await self.store.my_live_sessions():
            record = await self.store.load(speaking_id)
            if record is None:
                continue
            speaking = Speaking.from_fields(record)
            if speaking.status != Status.STOPPED.value:
                speaking.status = Status.STOPPED.value
                speaking.tm_update = timestamp()
                await self.store.save(speaking, stop_reason=StopReason.WORKER_LOST.value)
                await self.store.release_reference(
                    self.store.keys.reference(speaking.reference_type, speaking.reference_id),
                    speaking_id,
                )
                self.emit(Event(EventType.SPEAKING_STOPPED, speaking_id, {"reason": "worker_lost"}))

        async def orphan(speaking_id: str) -> bool:
            record = await self.store.load(speaking_id)
            return record is None or record.get("status") == Status.STOPPED.value

        removed = await sweep_leftovers(self.ari, self.waiters, orphan)
        if removed:
            log.warning("removed leftovers of a previous run", extra={"count": removed})

    # -- commands -----------------------------------------------------------------------

    async def _read_commands(self) -> None:
        pending = True  # first our own unacknowledged entries (a crash replay), then new ones
        while True:
            try:
                entries = await self.store.read_commands(pending=pending)
            except (ConnectionError, OSError) as exc:
                log.warning("redis unavailable", extra={"error": str(exc)[:200]})
                await asyncio.sleep(1)
                continue
            if pending and not entries:
                pending = False
            for entry_id, fields in entries:
                try:
                    await self.dispatch(entry_id, fields)
                except Exception:
                    log.exception("command dispatch failed", extra={"entry_id": entry_id})
                    await self.store.ack(entry_id)

    async def dispatch(self, entry_id: str, fields: dict[str, str]) -> None:
        """Route one stream entry. Never raises for bad input: it is answered and acked."""
        command_id = fields.get("command_id", "")
        try:
            command = parse_command(fields)
        except CommandError as exc:
            self.metrics.inc(
                "speaking_commands_total", type=fields.get("type", "?")[:16], outcome="invalid"
            )
            if command_id and len(command_id) <= 64:
                await self.reply_error(entry_id, command_id, exc)
            else:
                log.warning(
                    "malformed command dropped", extra={"entry_id": entry_id, "error": str(exc)}
                )
                self.emit(
                    Event(
                        EventType.COMMAND_REJECTED,
                        fields.get("speaking_id", "")[:64],
                        {"entry_id": entry_id, "error": exc.message},
                    )
                )
                await self.store.ack(entry_id)
            return
        if isinstance(command, Locate):
            await self._locate(entry_id, command)
            return
        previous = await self.store.result_of(command.command_id)
        if previous is not None:  # a replay: answer again, change nothing
            await self.store.finish_command(command.command_id, previous, entry_id)
            return
        runner = self.runners.get(command.speaking_id)
        if runner is None:
            if isinstance(command, Create) and await self.store.load(command.speaking_id) is None:
                runner = SessionRunner(self, command)
                self.runners[command.speaking_id] = runner
                for channel_id in runner.channel_ids:
                    self.by_channel[channel_id] = runner
                task = asyncio.create_task(runner.run(Inbound(entry_id, command)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                await self._not_live(entry_id, command)
            return
        if isinstance(command, Say | Flush):
            # Refuse at once while initiating rather than queueing behind the set-up.
            try:
                runner.state.require_active(type(command).__name__.lower())
            except CommandError as exc:
                await self.reply_error(entry_id, command.command_id, exc)
                return
        runner.inbox.put_nowait(Inbound(entry_id, command))

    async def runner_done(self, runner: SessionRunner) -> None:
        """Forget a finished runner, then answer what was still queued for it.
        The inbox is drained and the runner unregistered with no await in between."""
        leftovers = []
        while not runner.inbox.empty():
            item = runner.inbox.get_nowait()
            if isinstance(item, Inbound):
                leftovers.append(item)
        self.runners.pop(runner.speaking_id, None)
        for channel_id in runner.channel_ids:
            if self.by_channel.get(channel_id) is runner:
                del self.by_channel[channel_id]
        for inbound in leftovers:
            await self._not_live(inbound.entry_id, inbound.command)

    async def _not_live(self, entry_id: str, command: AnyCommand) -> None:
        """Commands for a session that is not running here (stopped, deleted, unknown)."""
        record = await self.store.load(command.speaking_id) or {}
        speaking = Speaking.from_fields(record) if record else None
        try:
            if speaking is None or speaking.tm_delete != NEVER:
                raise CommandError(ErrorCode.NOT_FOUND, f"speaking {command.speaking_id} not found")
            if speaking.status != Status.STOPPED.value:
                raise conflict(
                    f"speaking {speaking.id} is run by worker {record.get('worker_id', '?')}"
                )
            if isinstance(command, Say | Flush):
                reason = record.get("stop_reason", "")
                raise conflict(
                    f"cannot {type(command).__name__.lower()}: the session is stopped"
                    + (f" ({reason})" if reason else ""),
                    status="stopped",
                )
            if isinstance(command, Delete):
                speaking.tm_delete = speaking.tm_update = timestamp()
                await self.store.save(speaking)
            # Stop of a stopped session, or a repeated create: answer with the state.
            assert isinstance(command, Stop | Delete | Create)
        except CommandError as exc:
            await self.reply_error(entry_id, command.command_id, exc)
            return
        await self.reply_ok(entry_id, command.command_id, speaking)

    async def _locate(self, entry_id: str, command: Locate) -> None:
        """Answer whether this Asterisk holds the call, its state, and who owns it
        (the channel variable ``owner_variable``, set by whoever created the call)."""
        channel = await self.ari.get_channel(command.reference_id)
        owner = ""
        if channel is not None and self.settings.owner_variable:
            owner = (
                await self.ari.get_variable(command.reference_id, self.settings.owner_variable)
                or ""
            )
        body = {
            "ok": True,
            "command_id": command.command_id,
            "found": channel is not None,
            "state": str(channel.get("state", "")) if channel else "",
            "owner": owner,
            "providers": self.engines.configured,
        }
        await self.store.finish_command(command.command_id, body, entry_id)

    async def reply_ok(
        self, entry_id: str, command_id: str, speaking: Speaking, **extra: object
    ) -> None:
        self.metrics.inc("speaking_commands_total", outcome="ok")
        body = {"ok": True, "command_id": command_id, "speaking": speaking.to_fields(), **extra}
        await self.store.finish_command(command_id, body, entry_id)

    async def reply_error(self, entry_id: str, command_id: str, error: CommandError) -> None:
        self.metrics.inc("speaking_commands_total", outcome=error.code.value)
        log.info(
            "command refused",
            extra={"command_id": command_id, "code": error.code.value, "error": error.message},
        )
        body = {"ok": False, "command_id": command_id, "error": error.to_dict()}
        await self.store.finish_command(command_id, body, entry_id)

    # -- events -------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue an event for publication. Never awaits: callable from the clock tick."""
        self._events.put_nowait(event)

    async def _publish_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self.store.publish(event)
                self.metrics.inc("speaking_events_total", type=event.type.value)
            except Exception:
                log.exception("event publish failed", extra={"event_type": event.type.value})
            finally:
                self._events.task_done()

    def on_ari_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        channel_id = str(event.get("channel", {}).get("id", ""))
        self.waiters.fire(kind, channel_id)
        if kind in _GONE_EVENTS and (runner := self.by_channel.get(channel_id)):
            runner.channel_gone()

    async def _on_ari_connect(self) -> None:
        self._ari_connections += 1
        if self._ari_connections == 1:
            return
        # After a reconnect (Asterisk restarted?) events may have been missed: check.
        for runner in list(self.runners.values()):
            if await self.ari.get_channel(runner.create.reference_id) is None:
                runner.channel_gone()

    async def _heartbeat(self) -> None:
        while True:
            self.metrics.set("speaking_sessions", len(self.runners))
            self.metrics.set("speaking_pacer_streams", self.pacer.stream_count)
            self.metrics.set("speaking_pacer_ticks_total", self.pacer.ticks)
            self.metrics.set("speaking_ari_reconnects_total", self.ari.reconnects)
            if self.pacer.schedule is not None:
                self.metrics.set(
                    "speaking_pacer_max_lateness_seconds", self.pacer.schedule.max_lateness
                )
                self.metrics.set("speaking_pacer_resyncs", self.pacer.schedule.resyncs)
            with contextlib.suppress(ConnectionError, OSError):
                await self.store.heartbeat(
                    {
                        "ari_url": self.settings.ari_url,
                        "sessions": len(self.runners),
                        "providers": self.engines.configured,
                    }
                )
            await asyncio.sleep(5)


def _describe(metrics: Registry) -> None:
    metrics.describe("speaking_commands_total", "counter", "Commands handled, by outcome")
    metrics.describe("speaking_events_total", "counter", "Events published, by type")
    metrics.describe("speaking_sessions", "gauge", "Live sessions on this worker")
    metrics.describe("speaking_pacer_streams", "gauge", "Sessions paced by the shared clock")
    metrics.describe("speaking_pacer_max_lateness_seconds", "gauge", "Worst tick lateness so far")
    metrics.describe("speaking_pacer_resyncs", "gauge", "Times the clock fell too far behind")
    metrics.describe("speaking_pacer_ticks_total", "counter", "Ticks of the shared 20 ms clock")
    metrics.describe(
        "speaking_ari_reconnects_total", "counter", "Reconnects of the ARI events websocket"
    )
    metrics.describe("speaking_frames_sent_total", "counter", "20 ms frames sent by ended sessions")
    buckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    metrics.describe("speaking_setup_seconds", "histogram", "Create to active", buckets)
    metrics.describe(
        "speaking_first_audio_seconds", "histogram", "Say to first frame sent", buckets
    )
