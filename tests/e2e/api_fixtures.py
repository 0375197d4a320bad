"""The API tier as a real process, next to the e2e worker, with two customers' keys."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.e2e.processes import REDIS_URL, ServiceProcess, WorkerProcess, free_port
from worker.api.auth import KeyStore

CUSTOMER = "cust-1"  # the owner the test calls carry (X-Customer-Id -> SPEAKING_CUSTOMER_ID)
OTHER = "cust-2"


@dataclass
class Api:
    """A running API process and keys of two customers."""

    base: str
    key: str
    other_key: str
    process: ServiceProcess

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        data: bytes | None = None,
        auth: str = "token",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request, authenticated the way ``auth`` says (token, accesskey, bearer)."""
        key = self.key if key is None else key
        params: dict[str, str] = {}
        headers = dict(headers or {})
        if auth == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif auth in ("token", "accesskey"):
            params[auth] = key
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, self.base + path, params=params, headers=headers, json=json, data=data
            ) as resp,
        ):
            text = await resp.text()
            try:
                body = await resp.json(content_type=None) if text else None
            except ValueError:
                body = text
            return resp.status, body


async def start_api(redis: Redis, log_path: Path, **env: str) -> Api:
    port = free_port()
    keys = KeyStore(redis)
    key, other_key = await keys.add(CUSTOMER), await keys.add(OTHER)
    environment = {
        **os.environ,
        "SPEAKING_API_PORT": str(port),
        "SPEAKING_REDIS_URL": REDIS_URL,
        "SPEAKING_API_DEFAULT_PROVIDER": "offline",
        **env,
    }
    process = ServiceProcess("worker.api.main", log_path, environment, ready='"api ready"')
    await process.start(within_s=20)
    return Api(f"http://127.0.0.1:{port}", key, other_key, process)


async def stop_api(api: Api) -> None:
    assert await api.process.stop(within_s=10) == 0, api.process.tail()
    lines = api.process.lines
    assert not any(api.key in line or api.other_key in line for line in lines), "key in log"


@pytest.fixture(scope="session")
async def api(
    redis: Redis, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    running = await start_api(redis, tmp_path_factory.mktemp("api") / "api.log")
    yield running
    await stop_api(running)
