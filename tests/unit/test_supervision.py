"""Background tasks never die quietly (Supervisor), events survive a Redis outage in
order (Outbox), and the package has no import cycle.

The outbox is driven here with a stand-in for the Redis store that fails on cue: what
is tested is the outbox's own rule (publish in order, keep an event until it is
published, drop only segment events when full); the real Redis outage is tested end to
end in tests/e2e/test_faults.py."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from worker.events import Event, EventType
from worker.metrics import Registry
from worker.outbox import Outbox
from worker.supervisor import Supervisor

PACKAGE = Path(__file__).resolve().parents[2] / "worker"


async def test_a_task_that_dies_is_logged_counted_reported_and_restarted() -> None:
    metrics = Registry()
    supervisor = Supervisor(metrics, restart_delay_s=0.01)
    runs: list[int] = []
    restarted = asyncio.Event()

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("a bug")
        restarted.set()
        await asyncio.Event().wait()

    supervisor.start("loop", loop)
    await asyncio.sleep(0)  # the first run raises
    await asyncio.sleep(0)
    assert not supervisor.healthy and supervisor.dead == {"loop"}
    async with asyncio.timeout(2):
        await restarted.wait()
    assert supervisor.healthy and supervisor.deaths == 1
    assert 'speaking_task_deaths_total{task="loop"} 1' in metrics.render()
    await supervisor.stop()
    assert supervisor.healthy  # a stop is not a death


class FlakyStore:
    """Fails ``fail`` publishes with redis-py's ConnectionError, then records them."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.published: list[Event] = []
        self.attempts = 0

    async def publish(self, events: list[Event]) -> None:
        self.attempts += 1
        if self.fail:
            self.fail -= 1
            raise RedisConnectionError("Connection refused")
        self.published.extend(events)


async def test_events_wait_out_an_outage_and_are_published_in_order() -> None:
    store = FlakyStore(fail=3)
    outbox = Outbox(store, Registry())  # type: ignore[arg-type]
    task = asyncio.create_task(outbox.run())
    events = [Event(EventType.SEGMENT_STARTED, "s", {"segment_id": str(n)}) for n in range(5)]
    for event in events:
        outbox.emit(event)
    async with asyncio.timeout(5):
        await outbox.drained()
    task.cancel()
    assert store.published == events  # in order, none lost, none twice
    assert store.attempts >= 4  # three failed writes, then the rest


async def test_a_full_outbox_drops_segment_events_but_never_lifecycle_ones() -> None:
    metrics = Registry()
    outbox = Outbox(FlakyStore(0), metrics, max_queued=2)  # type: ignore[arg-type]
    outbox.emit(Event(EventType.SEGMENT_STARTED, "s"))
    outbox.emit(Event(EventType.SEGMENT_FINISHED, "s"))
    outbox.emit(Event(EventType.SEGMENT_STARTED, "s"))  # dropped
    outbox.emit(Event(EventType.SPEAKING_STOPPED, "s", {"reason": "hangup"}))  # kept
    assert len(outbox) == 3
    assert 'speaking_events_dropped_total{type="segment_started"} 1' in metrics.render()


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("worker"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("worker")}
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        graph[name.removesuffix(".__init__")] = _imports(path)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> Any:
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*trail, node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for target in graph.get(node, ()):
            visit(target, [*trail, node])
        state[node] = 2

    for module in graph:
        visit(module, [])


def test_failure_reasons_given_to_customers_name_no_internal_detail() -> None:
    from worker.ari import AriError
    from worker.engines.base import EngineError
    from worker.runner import public_reason

    refused = AriError(500, "POST", "/channels/speaking-1a2b3c4d-x-snoop/snoop", "boom")
    assert public_reason(refused) == "Asterisk refused a request (status 500)"
    assert "/channels" not in public_reason(refused)
    assert public_reason(TimeoutError()) == "Asterisk did not answer in time"
    assert public_reason(OSError("connect to 10.0.0.7:8088 failed")) == (
        "Asterisk could not be reached"
    )
    assert public_reason(EngineError("no voice 'x'")) == "the speech engine failed: no voice 'x'"
    assert public_reason(KeyError("secret")) == "internal error (KeyError)"
