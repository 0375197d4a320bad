"""The API tier as a real process, next to the e2e worker, with two customers' keys."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import ROOT
from tests.e2e.conftest import REDIS_URL, WorkerProcess, free_port
from worker.api.auth import KeyStore

CUSTOMER = "cust-1"  # the owner the test calls carry (X-Customer-Id -> SPEAKING_CUSTOMER_ID)
OTHER = "cust-2"


@dataclass
class Api:
    """A running API process and keys of two customers."""

    base: str
    key: str
    other_key: str
    process: asyncio.subprocess.Process
    lines: list[str]

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        data: bytes | None = None,
        auth: str = "token",
    ) -> tuple[int, Any]:
        """One request, authenticated the way ``auth`` says (token, accesskey, bearer)."""
        key = self.key if key is None else key
        params: dict[str, str] = {}
        headers: dict[str, str] = {}
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
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.api.main",
        cwd=ROOT,
        env={
            **os.environ,
            "SPEAKING_API_PORT": str(port),
            "SPEAKING_REDIS_URL": REDIS_URL,
            "SPEAKING_API_DEFAULT_PROVIDER": "offline",
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    ready = asyncio.Event()

    async def read() -> None:
        assert process.stderr is not None
        with log_path.open("w") as out:
            async for raw in process.stderr:
                line = raw.decode(errors="replace")
                lines.append(line)
                out.write(line)
                if '"api ready"' in line:
                    ready.set()

    asyncio.get_running_loop().create_task(read())
    async with asyncio.timeout(20):
        await ready.wait()
    return Api(f"http://127.0.0.1:{port}", key, other_key, process, lines)


async def stop_api(api: Api) -> None:
    api.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await api.process.wait() == 0
    assert not any(api.key in line or api.other_key in line for line in api.lines), "key in log"


@pytest.fixture(scope="session")
async def api(
    redis: Redis, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    running = await start_api(redis, tmp_path_factory.mktemp("api") / "api.log")
    yield running
    await stop_api(running)
