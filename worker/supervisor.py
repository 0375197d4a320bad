"""Background tasks that must never die quietly.

Each supervised task is a loop that should run for the life of the worker. If one
ends anyway (a bug: an exception its loop did not expect), the supervisor logs it at
error level, counts it (``speaking_task_deaths_total{task=...}``), reports the worker
unhealthy, and starts the task again after a pause: a worker must not go deaf for
good because one loop tripped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from worker.metrics import Registry

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """Starts named forever-tasks and restarts any that ends."""

    def __init__(self, metrics: Registry, restart_delay_s: float = RESTART_DELAY_S) -> None:
        self._metrics = metrics
        self._delay = restart_delay_s
        self._factories: dict[str, TaskFactory] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.dead: set[str] = set()  # ended and not yet restarted
        self.deaths = 0
        self._stopping = False
        metrics.describe(
            "speaking_task_deaths_total", "counter", "Background tasks that ended unexpectedly"
        )

    def start(self, name: str, factory: TaskFactory) -> None:
        self._factories[name] = factory
        self._launch(name)

    def _launch(self, name: str) -> None:
        self.dead.discard(name)
        task = asyncio.create_task(self._factories[name](), name=name)
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._ended(name, t))

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        log.error(
            "background task died; restarting it",
            extra={"task": name, "error": repr(error) if error else "returned"},
            exc_info=error,
        )
        self.deaths += 1
        self._metrics.inc("speaking_task_deaths_total", task=name)
        self.dead.add(name)
        asyncio.get_running_loop().call_later(self._delay, self._restart, name)

    def _restart(self, name: str) -> None:
        if not self._stopping:
            self._launch(name)

    @property
    def healthy(self) -> bool:
        return not self.dead

    async def stop(self, *names: str) -> None:
        """Cancel the named tasks (all when none are named) and wait for them."""
        chosen = names or tuple(self._tasks)
        if not names:
            self._stopping = True
        tasks = [self._tasks.pop(n) for n in chosen if n in self._tasks]
        for name in chosen:
            self._factories.pop(name, None)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
