"""Worker settings, read from ``SPEAKING_*`` environment variables."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from worker.env import from_env


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to know about its surroundings."""

    worker_id: str = field(default_factory=socket.gethostname)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "speaking"
    #: Deployment-wide event streams: 1 is the one stream ``<prefix>:events``; more
    #: shard it by session (``<prefix>:events:{s<k>}``) so a Redis Cluster spreads it.
    #: Every worker of a deployment must use the same number.
    event_shards: int = 1
    ari_url: str = "http://127.0.0.1:8088/ari"
    ari_user: str = "speaking"
    ari_password: str = ""
    ari_app: str = "speaking"
    #: Address Asterisk can reach this worker's RTP sockets on.
    rtp_host: str = "127.0.0.1"
    #: Port of the /metrics and /healthz HTTP endpoint; 0 disables it.
    metrics_port: int = 9464
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    #: Channel variable naming the customer who owns a call (set by whoever created the
    #: call, e.g. the dialplan); "" disables reading it.
    owner_variable: str = "SPEAKING_CUSTOMER_ID"
    #: The dialplan context whose ``_.`` extension runs ``ConfBridge(${EXTEN},,speaking_tts)``:
    #: how the worker joins app_confbridge rooms (asterisk-config/extensions.conf).
    confbridge_context: str = "speaking-confbridge"
    #: Serve wideband calls slin16 over chan_websocket ("1"); "0" sends mu-law over RTP.
    wideband_websocket: bool = True
    #: Keep a directory of all of Asterisk's channels from ARI events ("1"), so locate
    #: and a create's check need no request. Off by default: feeding the app every
    #: channel's events cost Asterisk more than the requests it saves (50 creates at
    #: once: create -> active p99 1,345 ms with it, 679 ms without; docs/scaling.md).
    channel_directory: bool = False
    #: Serve narrowband calls mu-law over chan_websocket too ("1"), instead of RTP ("0");
    #: the numbers behind the default are in docs/scaling.md.
    narrowband_websocket: bool = False
    #: Name this worker in Redis as where each of its Asterisk's channels is (every 2 s,
    #: from the janitor's channel list), so the API routes a create to it alone instead
    #: of asking every worker (``locate`` fan-out); "0" turns it off.
    publish_calls: bool = True
    #: Prefer the fast espeak-ng voice over piper for the offline provider's default.
    offline_default_voice: str = "en_US-joe-medium"
    #: Initiating/active sessions at once; a create past it is refused ``unavailable``.
    max_sessions: int = 500
    #: Sessions of each offline voice family at once (0 = unbounded): past what this box
    #: synthesizes in real time every one of them hears gaps, so a create past it is
    #: refused ``unavailable`` (worker/admission.py). Defaults from
    #: ``python -m bench.offline_capacity`` on a 2-core box (bench/README.md): all
    #: sessions kept real time up to piper 5-7 and espeak-ng 191-256 over three runs
    #: (alone, and beside one core kept busy as Asterisk's share); each default is the
    #: lowest of them less about 20% for the run-to-run noise. Scale them with the cores.
    offline_piper_sessions: int = 4
    offline_espeak_sessions: int = 150
    #: Says queued or playing per session, and their characters; past it ``limit_exceeded``.
    max_queued_says: int = 50
    max_queued_chars: int = 20_000
    #: Redis connections at most (sessions share them; a blocked one waits its turn).
    redis_connections: int = 32
    #: How often the command stream is trimmed and stale pending entries are reclaimed.
    maintenance_interval_s: float = 30.0

    # -- providers (each configured only with credentials; see docs/providers.md) --------
    #: ElevenLabs' key ("" = ELEVENLABS_API_KEY); its API base URL; model; "http" (a
    #: streamed request per say) or "websocket" (multi-stream-input).
    elevenlabs_api_key: str = ""
    elevenlabs_base_url: str = "https://api.elevenlabs.io"
    elevenlabs_model: str = "eleven_flash_v2_5"
    elevenlabs_mode: str = "http"
    #: Google: "host:port" ("" = Google's), plain gRPC for a local fake or proxy, and a
    #: service-account file ("" = Application Default Credentials).
    gcp_endpoint: str = ""
    gcp_insecure: bool = False
    gcp_credentials_file: str = ""
    #: Amazon Polly: region, endpoint ("" = AWS's), keys ("" = the standard chain).
    aws_region: str = "us-east-1"
    aws_endpoint_url: str = ""
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    #: Providers to try, in order, when a segment's provider fails before any of its
    #: audio was played, e.g. "gcp,offline". "" = none.
    fallback_providers: str = ""
    #: Concurrent requests per cloud provider (its connection pool and thread pool).
    provider_connections: int = 64
    #: The synthesis cache: bytes in memory, entry lifetime, and whether Redis keeps a
    #: shared copy for every worker of the deployment.
    tts_cache_bytes: int = 64 * 1024 * 1024
    tts_cache_ttl_s: float = 24 * 3600.0
    tts_cache_redis: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Each field from ``SPEAKING_<FIELD NAME IN CAPITALS>``."""
        names = {name: f"SPEAKING_{name.upper()}" for name in cls.__dataclass_fields__}
        return from_env(cls, names, env)

    def redacted(self) -> dict[str, object]:
        """Settings fit for a log line: secrets replaced."""
        out: dict[str, object] = dict(self.__dict__)
        for secret in ("ari_password", "elevenlabs_api_key", "aws_secret_access_key"):
            out[secret] = "***" if getattr(self, secret) else ""
        out["redis_url"] = redact_url(self.redis_url)
        return out


#: Query parameters of a URL whose values are secrets (redis-py reads ``?password=``).
_SECRET_PARAMS = ("pass", "secret", "token", "key", "auth", "credential")


def redact_url(url: str) -> str:
    """``url`` fit for a log line: its userinfo (``user:password@``, on single- and
    multi-host URLs alike) and the value of every secret-looking query parameter are
    ``***``. Everything else (scheme, hosts, path, other parameters) is kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    base, qmark, query = rest.partition("?")
    authority, slash, path = base.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    if qmark:
        params = []
        for item in query.split("&"):
            name, eq, _value = item.partition("=")
            secret = eq and any(word in name.lower() for word in _SECRET_PARAMS)
            params.append(f"{name}=***" if secret else item)
        query = "&".join(params)
    return f"{scheme}://{authority}{slash}{path}{qmark}{query}"
