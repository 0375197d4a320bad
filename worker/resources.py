"""Names and lifetimes of the channels and bridges the worker creates in Asterisk.

Names: every resource id is ``speaking-<tag>-<speaking id>[<suffix>]``, where the tag
names the deployment and the worker that made it (``resource_tag``) and the suffix the
resource's role (``-snoop``, ``-media``, ``-local``, ``-local2``; a session's own bridge
has none). A sweep after a crash removes only resources whose tag it knows: its own, or
a dead worker's of the same deployment; another deployment's channels on the same
Asterisk are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re

import aiohttp

from worker.ari import AriClient, AriError

log = logging.getLogger(__name__)

#: Every channel and bridge the worker creates has an id starting with this.
RESOURCE_PREFIX = "speaking-"
#: Roles of a session's channels, appended to its prefix.
SNOOP, MEDIA, LOCAL, LOCAL_PEER = "-snoop", "-media", "-local", "-local2"
DESTROYED_WAIT_S = 2.0
_RESOURCE = re.compile(r"^speaking-([0-9a-f]{8})-(.+?)(-snoop|-media|-local2|-local)?$")
#: What an unreachable, frozen or refusing Asterisk raises from a request.
ARI_FAILURES = (AriError, aiohttp.ClientError, OSError, TimeoutError)


def resource_tag(deployment: str, worker_id: str) -> str:
    """Eight hex digits naming (deployment, worker) inside every resource id."""
    return hashlib.sha256(f"{deployment}\0{worker_id}".encode()).hexdigest()[:8]


def parse_resource(resource_id: str) -> tuple[str, str] | None:
    """(tag, speaking id) of a channel or bridge id of ours, or None if it is not ours."""
    match = _RESOURCE.match(resource_id)
    return (match.group(1), match.group(2)) if match else None


def is_ours(resource_id: str) -> bool:
    """Whether a channel or bridge was made by some speaking worker (any deployment)."""
    return resource_id.startswith(RESOURCE_PREFIX) and parse_resource(resource_id) is not None


class TeardownIncomplete(Exception):
    """Asterisk did not confirm that every resource is gone; ``teardown`` must be retried."""


class ChannelWaiters:
    """Futures for ARI events about channels (and bridges) we create or destroy,
    registered before the request that causes them: the event may arrive before the
    request's reply."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}

    def expect(self, event_type: str, channel_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiting[(event_type, channel_id)] = future
        return future

    def forget(self, event_type: str, channel_id: str) -> None:
        self._waiting.pop((event_type, channel_id), None)

    def fire(self, event_type: str, channel_id: str) -> None:
        future = self._waiting.pop((event_type, channel_id), None)
        if future is not None and not future.done():
            future.set_result(None)


async def destroy_channel(ari: AriClient, waiters: ChannelWaiters, channel_id: str) -> bool:
    """Hang a channel up and return True once Asterisk confirms it is gone (a hangup is
    asynchronous in Asterisk: a 204 only means it was requested). False if that could not
    be confirmed (Asterisk unreachable, frozen, or slow): try again later."""
    # StasisEnd comes while the channel still exists; only ChannelDestroyed means it is
    # gone, and Asterisk sends it only to apps subscribed to the channel explicitly.
    gone = waiters.expect("ChannelDestroyed", channel_id)
    try:
        with contextlib.suppress(*ARI_FAILURES):  # already gone, or Asterisk is
            await ari.subscribe(f"channel:{channel_id}")
        try:
            if not await ari.hangup(channel_id):
                return True  # 404: not there
            async with asyncio.timeout(DESTROYED_WAIT_S):
                await gone
            return True
        except TimeoutError:
            pass  # no event (websocket down?): ask
        except ARI_FAILURES as exc:
            log.warning("hangup failed", extra={"channel": channel_id, "error": str(exc)[:200]})
            return False
        try:
            return await ari.get_channel(channel_id) is None
        except ARI_FAILURES:
            return False
    finally:
        waiters.forget("ChannelDestroyed", channel_id)
        await ari.unsubscribe(f"channel:{channel_id}")


async def destroy_bridge(ari: AriClient, waiters: ChannelWaiters, bridge_id: str) -> bool:
    """Destroy a bridge and return True once Asterisk confirms it is gone (False: try
    again later). ``DELETE /bridges`` answers before ARI's bridge list forgets the
    bridge (its snapshot cache is updated asynchronously): only BridgeDestroyed, sent to
    apps subscribed to the bridge, says it is gone everywhere."""
    gone = waiters.expect("BridgeDestroyed", bridge_id)
    try:
        with contextlib.suppress(*ARI_FAILURES):  # ours are subscribed already; a dead
            await ari.subscribe(f"bridge:{bridge_id}")  # worker's are not
        try:
            if not await ari.destroy_bridge(bridge_id):
                return True  # 404: not there
            async with asyncio.timeout(DESTROYED_WAIT_S):
                await gone
            return True
        except TimeoutError:
            pass
        except ARI_FAILURES as exc:
            log.warning("bridge not destroyed", extra={"error": str(exc)[:200]})
            return False
        try:
            return await ari.get_bridge(bridge_id) is None
        except ARI_FAILURES:
            return False
    finally:
        waiters.forget("BridgeDestroyed", bridge_id)


async def destroy_all(
    ari: AriClient, waiters: ChannelWaiters, channels: list[str], bridge: str | None
) -> tuple[list[str], str | None]:
    """Destroy channels, then the bridge; returns what could not be confirmed gone
    (the caller keeps it for a retry)."""
    left = [c for c in channels if not await destroy_channel(ari, waiters, c)]
    if bridge is not None and await destroy_bridge(ari, waiters, bridge):
        bridge = None
    return left, bridge
