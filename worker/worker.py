"""The worker: reads commands from Redis and routes them to session runners, routes ARI
events to the sessions they concern, and keeps its presence in Redis fresh.

Concurrency invariants:
* One task reads the command stream, and it never awaits Asterisk or a session: it
  parses each entry and posts it to the runner of its session id (created on the
  first command), or to a side task (``locate``, malformed entries). A flood of says
  into one session therefore never delays another session's flush.
* Each session id has one runner applying its commands in stream order.
* ARI events are dispatched synchronously in arrival order (see ``AriClient``).
* ``runners`` and ``by_channel`` are changed only with no await between a check and
  the change, so a command or event is never routed to a runner that has finished.
* Every background loop is supervised (worker/supervisor.py); a death makes /healthz 503.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from redis.exceptions import ResponseError

from worker.admission import Capacity, Usage, refusal
from worker.ari import AriClient
from worker.commands import Create, Locate, parse_command
from worker.conference import event_ends
from worker.config import Settings
from worker.engines.registry import EngineRegistry
from worker.errors import CommandError, ErrorCode, unavailable
from worker.events import Event, EventType
from worker.locator import locate
from worker.maintenance import Maintenance
from worker.metrics import Registry
from worker.outbox import Outbox
from worker.pacer import Pacer
from worker.presence import Presence
from worker.recovery import Recovery
from worker.redis_retry import (
    REDIS_OUTAGE,
    backoff,
    failovers,
    retry_through_outage,
    unblocked_by_failover,
)
from worker.replies import ReplyWriter
from worker.resources import ARI_FAILURES, ChannelWaiters, resource_tag
from worker.runner import SessionRunner
from worker.say_queue import Limits
from worker.session_messages import ChannelGone, Inbound, Reply, Shutdown
from worker.session_playback import describe_playback_metrics
from worker.session_services import SessionServices
from worker.store import Store
from worker.supervisor import Supervisor
from worker.synthesis_cache import SynthesisCache

log = logging.getLogger(__name__)

_GONE_EVENTS = {"ChannelDestroyed", "ChannelHangupRequest", "StasisEnd"}
_BRIDGE_EVENTS = {"BridgeDestroyed", "ChannelLeftBridge"}
#: How often a ConfBridge room is asked whether anyone but us is left (it has no events).
CONFERENCE_POLL_S = 1.0
#: Commands waiting in one session's inbox; past this the session answers "busy".
MAX_INBOX = 500
#: Side tasks (locate, refusals) and finished-session runners at once; past this the
#: reader waits, so a flood slows its sender instead of growing memory.
MAX_SIDE_TASKS = 256
#: Replies not yet written; past this the reader waits (Redis is slow or down).
MAX_UNWRITTEN_REPLIES = 5000
MAX_TRANSIENT_RUNNERS = 1000


REDIS_OR_TIMEOUT: tuple[type[Exception], ...] = (*REDIS_OUTAGE, TimeoutError)


class Worker:
    """One worker beside one Asterisk."""

    def __init__(
        self, settings: Settings, store: Store, engines: EngineRegistry, metrics: Registry
    ) -> None:
        self.settings = settings
        self.capacity = Capacity.from_settings(settings)
        self.store = store
        self.engines = engines
        self.metrics = metrics
        self.instance = secrets.token_hex(8)  # this process, as the worker id's lease holder
        self.tag = resource_tag(settings.redis_prefix, store.worker_id)
        self.ari = AriClient(
            settings.ari_url,
            settings.ari_user,
            settings.ari_password,
            settings.ari_app,
            on_event=self.on_ari_event,
            on_connect=self._on_ari_connect,
            channel_directory=settings.channel_directory,
        )
        self.pacer = Pacer()
        self.waiters = ChannelWaiters()
        self.outbox = Outbox(store, metrics)
        self.replies = ReplyWriter(store, metrics)
        self.supervisor = Supervisor(metrics)
        self.runners: dict[str, SessionRunner] = {}
        self.by_channel: dict[str, set[SessionRunner]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # runner tasks
        self._side: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()  # entry ids routed and not yet acknowledged
        # Entries acknowledged while a read of the stream was on its way: that read may
        # still return them (Redis ran it before the XACK), and routing one again would
        # answer it a second time. None while no read is waiting.
        self._acked_during_read: set[str] | None = None
        self._room = asyncio.Event()  # set when a runner or side task ends
        self._ari_connections = 0
        self.ready = asyncio.Event()
        self.shutdown_step = ""
        self.presence = Presence(
            store, self.instance, self._heartbeat_info, self.live_sessions, self._gauges
        )
        self.recovery = Recovery(
            store, self.ari, self.waiters, self.tag, self.outbox.emit, self._has_runner
        )
        self.services = SessionServices(
            store=store,
            ari=self.ari,
            waiters=self.waiters,
            engines=engines,
            pacer=self.pacer,
            metrics=metrics,
            emit=self.outbox.emit,
            replies=self.replies,
            resource_tag=self.tag,
            rtp_host=settings.rtp_host,
            wideband_websocket=settings.wideband_websocket,
            narrowband_websocket=settings.narrowband_websocket,
            limits=Limits(settings.max_queued_says, settings.max_queued_chars),
            admit=self._admit,
            confbridge_context=settings.confbridge_context,
            cache=SynthesisCache(
                metrics,
                settings.tts_cache_bytes,
                settings.tts_cache_ttl_s,
                redis=store.redis if settings.tts_cache_redis else None,
                prefix=settings.redis_prefix,
            ),
        )
        self.maintenance = Maintenance(
            settings, store, self.recovery, engines, self._route, self._in_flight
        )
        store.on_acked = self._acked
        _describe(metrics)

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Take the worker id, connect, recover, then serve. Waits for as long as Asterisk
        or Redis is unreachable (``/healthz`` says why meanwhile): exiting would only need
        a human to start it again.

        Raises WorkerIdInUse if another live process has this worker id.
        """
        await self.presence.take_worker_id()
        await self.ari.start()
        await self.ari.connected.wait()
        await retry_through_outage(self.store.ensure_group)
        removed = await retry_through_outage(self.recovery.at_start)
        if removed:
            log.warning("removed leftovers of a previous run", extra={"count": removed})
        self.pacer.start()
        self.supervisor.start("events", self.outbox.run)
        self.supervisor.start("replies", self.replies.run)
        self.supervisor.start("commands", self._read_commands)
        self.supervisor.start("heartbeat", self.presence.run)
        self.supervisor.start("reclaim", self.maintenance.reclaim)
        self.supervisor.start("trim", self.maintenance.trim)
        self.supervisor.start("janitor", self.maintenance.janitor)
        self.supervisor.start("voices", self.maintenance.publish_voices)
        self.supervisor.start("conferences", self._watch_conferences)
        warm = asyncio.create_task(self.engines.warm_up(), name="warm-up")
        self._side.add(warm)
        warm.add_done_callback(self._side.discard)
        self.ready.set()
        log.info("worker ready", extra={"worker_id": self.store.worker_id, "tag": self.tag})

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop reading commands, stop every session (reason shutdown), clean up.
        ``shutdown_step`` names the step under way (for a caller that bounds it)."""
        self.shutdown_step = "readers"
        await self.supervisor.stop("commands", "reclaim", "janitor")
        self.shutdown_step = "sessions"
        for runner in list(self.runners.values()):
            runner.post(Shutdown())
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in pending:  # stuck on Asterisk: the next start sweeps what is left
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.shutdown_step = "side tasks"
        for task in list(self._side):  # unanswered, so replayed by the next start
            task.cancel()
        await asyncio.gather(*self._side, return_exceptions=True)
        self.shutdown_step = "replies"
        try:
            async with asyncio.timeout(3.0):  # Redis may be down: do not wait forever
                await self.replies.drained()
                await self.outbox.drained()
        except TimeoutError:
            log.warning(
                "replies or events not written at shutdown",
                extra={"replies": len(self.replies), "events": len(self.outbox)},
            )
        self.shutdown_step = "loops"
        await self.supervisor.stop()
        self.shutdown_step = "unregister"
        try:
            async with asyncio.timeout(2.0):
                await self.store.unregister(self.instance)
        except REDIS_OR_TIMEOUT:
            pass
        self.shutdown_step = "ari"
        await self.pacer.stop()
        await self.ari.close()
        self.shutdown_step = "done"
        log.info("worker stopped", extra={"worker_id": self.store.worker_id})

    @property
    def healthy(self) -> bool:
        return (
            self.ready.is_set()
            and self.ari.connected.is_set()
            and self.presence.redis_ok
            and not self.presence.lease_lost
            and self.supervisor.healthy
        )

    # -- commands -----------------------------------------------------------------------

    async def _read_commands(self) -> None:
        pending = True  # first our own unacknowledged entries (a crash replay), then new ones
        attempt = 0
        switches = failovers(self.store.redis)
        while True:
            if (noticed := failovers(self.store.redis)) != switches:
                # A new primary may have missed some XACKs: what it holds comes first.
                switches, pending = noticed, True
            acked: set[str] = set()
            self._acked_during_read = acked
            try:
                entries = await self.store.read_commands(pending=pending)
                attempt = 0
            except ResponseError as exc:
                if unblocked_by_failover(exc):  # a new primary: what it holds comes first
                    pending = True
                    await asyncio.sleep(backoff(1))
                    continue
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("command group missing (Redis restarted empty?); recreating it")
                await retry_through_outage(self.store.ensure_group)
                pending = True
                continue
            except REDIS_OUTAGE as exc:
                attempt += 1
                if attempt == 1:
                    log.warning("redis unavailable", extra={"error": type(exc).__name__})
                # The server we come back to may be a promoted replica that never saw some
                # of our XACKs: its pending entries come first (a replay is answered once).
                pending = True
                await asyncio.sleep(backoff(attempt))
                continue
            finally:
                self._acked_during_read = None
            if pending and not entries:
                pending = False
            # No await from the read's return to here: an entry acknowledged after it is
            # still in _in_flight, one acknowledged before it is in ``acked``.
            for entry_id, fields in entries:
                if entry_id not in self._in_flight and entry_id not in acked:
                    self._route(entry_id, fields)
            await self._wait_for_room()

    def _acked(self, entry_id: str) -> None:
        self._in_flight.discard(entry_id)
        if self._acked_during_read is not None:
            self._acked_during_read.add(entry_id)

    def _route(self, entry_id: str, fields: dict[str, str]) -> None:
        """Send one stream entry where it is handled. Never awaits."""
        self._in_flight.add(entry_id)
        try:
            command = parse_command(fields)
        except CommandError as exc:
            self._refuse_malformed(entry_id, fields, exc)
            return
        if isinstance(command, Locate):
            self._spawn(self._locate(entry_id, command))
            return
        runner = self.runners.get(command.speaking_id)
        if runner is None:
            runner = self._new_runner(command.speaking_id)
            if isinstance(command, Create):
                for channel_id in runner.watched(command):
                    self.by_channel.setdefault(channel_id, set()).add(runner)
        elif runner.pending_commands >= MAX_INBOX:
            error = unavailable(f"speaking {command.speaking_id} is busy; try again")
            self._refuse(entry_id, command.command_id, error)
            return
        runner.post(Inbound(entry_id, command, _millis(fields.get("expires_at", ""))))

    def _new_runner(self, speaking_id: str) -> SessionRunner:
        runner = SessionRunner(speaking_id, self.services, self._runner_done)
        self.runners[speaking_id] = runner
        task = asyncio.create_task(runner.run(), name=f"session-{speaking_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return runner

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._side.discard(task)
        self._room.set()

    def _runner_done(self, runner: SessionRunner, leftovers: list[Inbound]) -> None:
        """Forget a finished runner (called synchronously from its task's last step)."""
        if self.runners.get(runner.speaking_id) is runner:
            del self.runners[runner.speaking_id]
        for channel_id, runners in list(self.by_channel.items()):
            runners.discard(runner)
            if not runners:
                del self.by_channel[channel_id]
        for inbound in leftovers:  # only after a crash of the runner: answered, not lost
            error = CommandError(
                ErrorCode.INTERNAL, "the session failed; the command was not applied"
            )
            self._refuse(inbound.entry_id, inbound.command.command_id, error)

    def _has_runner(self, speaking_id: str) -> bool:
        """Whether a session is in this worker's hands (also while it is being torn down:
        the sweep must not race its teardown)."""
        return speaking_id in self.runners

    def _admit(self, wanted: Usage) -> CommandError | None:
        # Every live runner has its usage: it was admitted with it (restored ones are
        # never live).
        live = [usage for r in self.runners.values() if r.live and (usage := r.usage)]
        return refusal(self.capacity, live, wanted)

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._side.add(task)
        task.add_done_callback(self._task_done)

    async def _wait_for_room(self) -> None:
        """Back-pressure on the reader: bounded side tasks and finished-session runners."""
        await self.replies.below(MAX_UNWRITTEN_REPLIES)
        while len(self._side) > MAX_SIDE_TASKS or len(self.runners) > (
            self.settings.max_sessions + MAX_TRANSIENT_RUNNERS
        ):
            self._room.clear()
            await self._room.wait()

    def _refuse(self, entry_id: str, command_id: str, error: CommandError) -> None:
        self.replies.answer(command_id, Reply.refusal(entry_id, command_id, error).body, entry_id)

    def _refuse_malformed(self, entry_id: str, fields: dict[str, str], error: CommandError) -> None:
        command_id = fields.get("command_id", "")
        if command_id and len(command_id) <= 64:
            self._refuse(entry_id, command_id, error)
            return
        self._spawn(self._drop_malformed(entry_id, fields, error))

    async def _drop_malformed(
        self, entry_id: str, fields: dict[str, str], error: CommandError
    ) -> None:
        """An entry without a usable command id cannot be answered: reported, then acked."""
        log.warning("malformed command dropped", extra={"entry_id": entry_id, "error": str(error)})
        data = {"entry_id": entry_id, "error": error.message}
        self.outbox.emit(
            Event(EventType.COMMAND_REJECTED, fields.get("speaking_id", "")[:64], data)
        )
        await retry_through_outage(lambda: self.store.ack(entry_id))

    async def _locate(self, entry_id: str, command: Locate) -> None:
        """Answer whether this Asterisk holds the call or conference (worker/locator.py)."""
        body: dict[str, Any] = {"ok": True, "command_id": command.command_id}
        try:
            variable, providers = self.settings.owner_variable, self.engines.configured
            body |= await locate(self.ari, command, variable, providers)
        except ARI_FAILURES as exc:
            error = unavailable(f"Asterisk did not answer ({type(exc).__name__})")
            body = {"ok": False, "command_id": command.command_id, "error": error.to_dict()}
        self.replies.answer(command.command_id, body, entry_id)

    # -- ARI events -----------------------------------------------------------------------

    def on_ari_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        channel_id = str(event.get("channel", {}).get("id", ""))
        self.waiters.fire(kind, channel_id)
        if kind == "BridgeDestroyed":
            self.waiters.fire(kind, str(event.get("bridge", {}).get("id", "")))
        if kind in _GONE_EVENTS:
            self._gone(channel_id)
        elif kind in _BRIDGE_EVENTS and event_ends(event):  # an ARI conference ended
            self._gone(f"bridge:{event.get('bridge', {}).get('id', '')}")

    def _gone(self, key: str) -> None:
        for runner in self.by_channel.get(key, ()):
            if runner.live:
                runner.post(ChannelGone(key))

    async def _on_ari_connect(self) -> None:
        self._ari_connections += 1
        if self._ari_connections == 1:
            return
        # After a reconnect events may have been missed: a session whose call or whose own
        # channels vanished meanwhile is stopped (reason hangup). Only channels that exist
        # by now are checked: a session still being set up has not made all of its own.
        for runner in [r for r in self.runners.values() if r.live]:
            media = runner.settled
            if media is not None and await media.gone():
                runner.post(ChannelGone("reconnect check"))

    async def _watch_conferences(self) -> None:
        """Stop the sessions of ConfBridge rooms that ended (ARI gives no event for them)."""
        while True:
            await asyncio.sleep(CONFERENCE_POLL_S)
            for runner in [r for r in self.runners.values() if r.active]:
                media = runner.settled
                if media is None or not media.polled:
                    continue
                try:
                    if await media.gone():
                        runner.post(ChannelGone("conference poll"))
                except ARI_FAILURES:
                    pass  # Asterisk is away: the reconnect check covers it

    # -- metrics --------------------------------------------------------------------------

    def live_sessions(self) -> list[SessionRunner]:
        return [r for r in self.runners.values() if r.live]

    def _heartbeat_info(self) -> dict[str, Any]:
        return {
            "ari_url": self.settings.ari_url,
            "tag": self.tag,
            "instance": self.instance,
            "sessions": len(self.live_sessions()),
            "providers": self.engines.configured,
        }

    def _gauges(self) -> None:
        m = self.metrics
        m.set("speaking_sessions", len(self.live_sessions()))
        m.set("speaking_pacer_streams", self.pacer.stream_count)
        m.set("speaking_pacer_ticks_total", self.pacer.ticks)
        m.set("speaking_ari_reconnects_total", self.ari.reconnects)
        m.set("speaking_outbox_events", len(self.outbox))
        if self.pacer.schedule is not None:
            m.set("speaking_pacer_max_lateness_seconds", self.pacer.schedule.max_lateness)
            m.set("speaking_pacer_resyncs", self.pacer.schedule.resyncs)


def _millis(value: str) -> int:
    """An optional integer field (milliseconds since the epoch); 0 when absent or malformed."""
    return int(value) if value.isdigit() and len(value) <= 16 else 0


def _describe(metrics: Registry) -> None:
    metrics.describe("speaking_commands_total", "counter", "Commands handled, by outcome")
    metrics.describe("speaking_sessions", "gauge", "Live sessions on this worker")
    metrics.describe("speaking_pacer_streams", "gauge", "Sessions paced by the shared clock")
    metrics.describe("speaking_pacer_max_lateness_seconds", "gauge", "Worst tick lateness so far")
    metrics.describe("speaking_pacer_resyncs", "gauge", "Times the clock fell too far behind")
    metrics.describe("speaking_pacer_ticks_total", "counter", "Ticks of the shared 20 ms clock")
    metrics.describe("speaking_outbox_events", "gauge", "Events waiting to be published")
    metrics.describe(
        "speaking_ari_reconnects_total", "counter", "Reconnects of the ARI events websocket"
    )
    buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    metrics.describe("speaking_setup_seconds", "histogram", "Create to active", buckets)
    describe_playback_metrics(metrics)
