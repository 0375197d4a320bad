"""API tier settings, read from ``SPEAKING_API_*`` (and shared ``SPEAKING_REDIS_*``) variables."""

from __future__ import annotations

from dataclasses import dataclass

from worker.env import from_env


@dataclass(frozen=True)
class ApiSettings:
    """Where the API listens and how it treats requests."""

    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "speaking"
    #: The provider of a create that names none. The public document says elevenlabs;
    #: a deployment without ElevenLabs credentials sets this to ``offline`` (or another).
    default_provider: str = "elevenlabs"
    #: Refuse to attach to a call whose owner (the worker's owner variable) is another
    #: customer. A single-tenant deployment switches it off with 0.
    tenancy_check: bool = True
    #: How long to wait for a worker's reply to a command.
    command_timeout_s: float = 10.0
    #: A worker whose heartbeat is older than this is considered gone.
    worker_stale_s: float = 15.0
    #: Redis connections for short requests, for reply waits, and for event streams (the
    #: last also caps the open event streams of this API process).
    redis_pool_size: int = 50
    reply_pool_size: int = 200
    max_event_streams: int = 200
    #: Open event streams (SSE) one customer may hold at once on this API process.
    max_event_streams_per_customer: int = 10
    #: Commands one customer may have waiting for a worker's answer at once.
    max_commands_in_flight: int = 32
    #: Requests of one customer being handled at once (event streams aside).
    max_requests_in_flight_per_customer: int = 64
    #: The TCP edge (worker/api/edge.py): a connection's first request headers must be
    #: in within this, a body within the next, an idle kept-alive connection is closed
    #: after the third; connections overall and per client address.
    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    keepalive_s: float = 15.0
    max_connections: int = 2048
    max_connections_per_client: int = 64
    #: /metrics: with a token, only for ``Authorization: Bearer <token>``; with an
    #: address (``host:port``), served there alone and not on the public port.
    metrics_token: str = ""
    metrics_address: str = ""

    def __post_init__(self) -> None:
        """Raises ValueError for a metrics address that is not ``host:port``."""
        if self.metrics_address:
            host, _, port = self.metrics_address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"SPEAKING_API_METRICS_ADDRESS {self.metrics_address!r} must be host:port "
                    "(e.g. 127.0.0.1:9464)"
                )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ApiSettings:
        return from_env(cls, _VARIABLES, env)


_VARIABLES = {
    "host": "SPEAKING_API_HOST",
    "port": "SPEAKING_API_PORT",
    "redis_url": "SPEAKING_REDIS_URL",
    "redis_prefix": "SPEAKING_REDIS_PREFIX",
    "default_provider": "SPEAKING_API_DEFAULT_PROVIDER",
    "tenancy_check": "SPEAKING_API_TENANCY_CHECK",
    "command_timeout_s": "SPEAKING_API_COMMAND_TIMEOUT_S",
    "worker_stale_s": "SPEAKING_API_WORKER_STALE_S",
    "redis_pool_size": "SPEAKING_API_REDIS_POOL_SIZE",
    "reply_pool_size": "SPEAKING_API_REPLY_POOL_SIZE",
    "max_event_streams": "SPEAKING_API_MAX_EVENT_STREAMS",
    "max_event_streams_per_customer": "SPEAKING_API_MAX_EVENT_STREAMS_PER_CUSTOMER",
    "max_commands_in_flight": "SPEAKING_API_MAX_COMMANDS_IN_FLIGHT",
    "max_requests_in_flight_per_customer": "SPEAKING_API_MAX_REQUESTS_IN_FLIGHT_PER_CUSTOMER",
    "header_timeout_s": "SPEAKING_API_HEADER_TIMEOUT_S",
    "body_timeout_s": "SPEAKING_API_BODY_TIMEOUT_S",
    "keepalive_s": "SPEAKING_API_KEEPALIVE_S",
    "max_connections": "SPEAKING_API_MAX_CONNECTIONS",
    "max_connections_per_client": "SPEAKING_API_MAX_CONNECTIONS_PER_CLIENT",
    "metrics_token": "SPEAKING_API_METRICS_TOKEN",
    "metrics_address": "SPEAKING_API_METRICS_ADDRESS",
}
