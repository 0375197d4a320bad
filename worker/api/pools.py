"""The API tier's Redis connections: one capped pool per use.

Blocking reads hold a connection for seconds (a worker's reply, an SSE stream's next
event). In one shared pool, enough of them take every connection and then nothing else
works, the authentication lookup included (measured before: 110 open SSE streams of one
customer made every request of every customer fail). So each use has its own pool with a
cap, and a request that finds its pool exhausted waits briefly, then is answered 503.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from worker.api.settings import ApiSettings
from worker.redis_retry import connect


@dataclass(frozen=True)
class RedisPools:
    main: Redis  # short requests: keys, records, the catalog, sending commands
    replies: Redis  # BLPOP for the workers' replies
    streams: Redis  # XREAD of the event streams (SSE)

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> RedisPools:
        url = settings.redis_url
        wait = settings.command_timeout_s + 5.0  # longer than the longest BLPOP
        return cls(
            main=connect(url, settings.redis_pool_size, 5.0),
            replies=connect(url, settings.reply_pool_size, wait),
            streams=connect(url, settings.max_event_streams, 20.0),  # > the SSE keep-alive
        )

    async def close(self) -> None:
        for client in (self.main, self.replies, self.streams):
            await client.aclose()
