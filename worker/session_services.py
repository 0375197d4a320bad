"""What a session's runner needs from its worker, as narrow interfaces: the store, ARI,
engines, the shared clock, metrics, the reply writer and the worker's settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.admission import Usage
from worker.ari import AriClient
from worker.engines.registry import EngineRegistry
from worker.errors import CommandError
from worker.events import Event
from worker.metrics import Registry
from worker.pacer import Pacer
from worker.replies import ReplyWriter
from worker.resources import ChannelWaiters
from worker.say_queue import Limits
from worker.store import Store
from worker.synthesis_cache import SynthesisCache


@dataclass
class SessionServices:
    """What runners need from their worker: narrow interfaces, never the worker itself."""

    store: Store
    ari: AriClient
    waiters: ChannelWaiters
    engines: EngineRegistry
    pacer: Pacer
    metrics: Registry
    emit: Callable[[Event], None]
    replies: ReplyWriter
    resource_tag: str
    rtp_host: str
    wideband_websocket: bool
    #: Narrowband (mu-law) sessions over chan_websocket too, instead of RTP.
    narrowband_websocket: bool
    limits: Limits
    #: Why a new session using this provider and voice cannot be admitted now
    #: (capacity), or None (worker/admission.py).
    admit: Callable[[Usage], CommandError | None]
    cache: SynthesisCache | None = None
    #: The dialplan context whose Local channels join ConfBridge rooms.
    confbridge_context: str = "speaking-confbridge"
