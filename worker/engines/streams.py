"""What every cloud engine does with a provider's audio stream: time it out, and turn
its failures into EngineErrors a customer may read (provider, status, reason; never a
key, URL or internal host)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from worker.engines.base import EngineError, FailureKind

#: No first audio this long after the request: the provider is too slow to be useful.
FIRST_BYTE_TIMEOUT_S = 5.0
#: Audio stopped flowing for this long in the middle of a stream.
STALL_TIMEOUT_S = 3.0


def http_failure(provider: str, status: int, reason: str = "") -> EngineError:
    """The EngineError for an HTTP-like status from a provider."""
    detail = f": {reason}" if reason else ""
    if status in (401, 403):
        return EngineError(
            f"{provider}: HTTP {status} (credentials refused){detail}", FailureKind.AUTH
        )
    if status == 429:
        return EngineError(f"{provider}: HTTP 429 (rate limited){detail}", FailureKind.RATE_LIMIT)
    if status >= 500:
        return EngineError(
            f"{provider}: HTTP {status} (provider error){detail}", FailureKind.SERVER
        )
    return EngineError(f"{provider}: HTTP {status} (request refused){detail}", FailureKind.INVALID)


async def guarded(
    source: AsyncIterator[bytes],
    provider: str,
    describe: Callable[[Exception], EngineError],
    first_byte_s: float | None = None,
    stall_s: float | None = None,
) -> AsyncIterator[bytes]:
    """Yield ``source``'s chunks; EngineError (TIMEOUT, STALLED, or ``describe``'s) if the
    first chunk is late, the audio stalls, or the source fails. Closing this closes it.
    The limits default to this module's constants, read at each call."""
    first_byte_s = FIRST_BYTE_TIMEOUT_S if first_byte_s is None else first_byte_s
    stall_s = STALL_TIMEOUT_S if stall_s is None else stall_s
    first = True
    try:
        while True:
            try:
                async with asyncio.timeout(first_byte_s if first else stall_s):
                    chunk = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if first:
                    raise EngineError(
                        f"{provider}: no audio within {first_byte_s:.0f} s", FailureKind.TIMEOUT
                    ) from None
                raise EngineError(
                    f"{provider}: the audio stopped for {stall_s:.0f} s", FailureKind.STALLED
                ) from None
            except EngineError:
                raise
            except Exception as exc:
                raise describe(exc) from exc
            first = False
            if chunk:
                yield chunk
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
