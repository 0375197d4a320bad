"""Run blocking PCM producers on a worker thread and consume them from the event loop.

Two shapes of blocking producer are supported:

* a generator of chunks (``iterate_generator_in_thread``), e.g. piper's per-sentence
  audio, and
* a push-style function that calls ``emit(chunk)`` from inside a C callback
  (``iterate_in_thread``), e.g. espeak-ng's synthesis callback. ``emit`` returns
  ``False`` once the consumer has gone away, so the producer can abort its library.

Thread-safety invariants:

* The worker thread never touches asyncio objects directly: every chunk reaches the
  loop through ``loop.call_soon_threadsafe``.
* Memory is bounded: the producer holds a credit per chunk in flight and blocks
  (on a ``threading.Condition``) when ``max_pending`` chunks are waiting for the
  consumer. The loop thread takes that condition's lock only for a counter update,
  never while blocking, so the loop is never stalled by the producer.
* Stopping is cooperative: the consumer sets a flag and wakes the producer; the
  producer notices at its next chunk. Cleanup never waits for the thread, so a
  flush is immediate even while a long sentence is still being synthesized.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Executor
from typing import Final

Emit = Callable[[bytes], bool]
"""Hand one chunk to the consumer; blocks while the queue is full; ``False`` = stop now."""

DEFAULT_MAX_PENDING: Final = 16


class _End:
    """Sentinel posted once after the producer returns, carrying its exception if any."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Channel:
    """The hand-off between one producer thread and one consuming coroutine."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending: int) -> None:
        self._loop = loop
        self._max_pending = max_pending
        # Only touched on the loop thread (filled by call_soon_threadsafe callbacks).
        self.queue: asyncio.Queue[bytes | _End] = asyncio.Queue()
        # Shared between threads; guarded by _cond.
        self._cond = threading.Condition()
        self._pending = 0
        self._stopped = False

    # -- producer (worker thread) side -------------------------------------------------

    def emit(self, chunk: bytes) -> bool:
        with self._cond:
            while self._pending >= self._max_pending and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return False
            self._pending += 1
        return self._post(chunk)

    def _post(self, item: bytes | _End) -> bool:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.stop()
            return False
        return True

    def run(self, produce: Callable[[Emit], None]) -> None:
        # A job queued behind others on a single-thread executor may start after its
        # consumer already gave up: do not start the library at all then.
        if self.stopped:
            return
        error: BaseException | None = None
        try:
            produce(self.emit)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            error = exc
        if not self.stopped:
            self._post(_End(error))

    # -- consumer (loop thread) side ---------------------------------------------------

    @property
    def stopped(self) -> bool:
        with self._cond:
            return self._stopped

    def consumed(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


async def iterate_in_thread(
    produce: Callable[[Emit], None],
    *,
    executor: Executor | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> AsyncGenerator[bytes, None]:
    """Run ``produce(emit)`` in ``executor`` and yield every chunk it emits, in order.

    ``executor=None`` uses the loop's default executor; pass a single-thread executor
    for libraries with process-global state. An exception raised by ``produce`` is
    re-raised here after the chunks emitted before it. Closing or cancelling the
    iterator makes the next ``emit`` return ``False`` and returns without waiting.
    """
    if max_pending < 1:
        raise ValueError("max_pending must be at least 1")
    loop = asyncio.get_running_loop()
    channel = _Channel(loop, max_pending)
    # The future is not awaited on purpose (cleanup must not wait for the thread);
    # ``run`` catches everything, so it never holds an unretrieved exception.
    loop.run_in_executor(executor, channel.run, produce)
    try:
        while True:
            item = await channel.queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            channel.consumed()
            yield item
    finally:
        channel.stop()


def iterate_generator_in_thread(
    make_chunks: Callable[[], Iterator[bytes]],
    *,
    executor: Executor | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> AsyncGenerator[bytes, None]:
    """Like ``iterate_in_thread`` for a blocking generator, created on the worker thread.

    The generator is closed (its ``finally`` blocks run, on the worker thread) as soon
    as the consumer stops, i.e. before the generator computes its next chunk.
    """

    def produce(emit: Emit) -> None:
        chunks = make_chunks()
        try:
            for chunk in chunks:
                if not emit(chunk):
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    return iterate_in_thread(produce, executor=executor, max_pending=max_pending)
