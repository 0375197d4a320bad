"""The cloud providers' local fakes and a worker + API stack configured for all of them
(shared by test_providers.py and test_conferences.py through conftest.py)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import ROOT
from tests.e2e.api_fixtures import Api, start_api, stop_api
from tests.e2e.processes import PRIVATE_REDIS_URL, WorkerProcess, child_command
from worker.client import SpeakingClient

KEY = "e2e-elevenlabs-key"
Stack = tuple[WorkerProcess, Api, SpeakingClient]


@dataclass
class Fakes:
    elevenlabs: str
    gcp: str
    polly: str
    process: asyncio.subprocess.Process


@pytest.fixture(scope="module")
async def fakes() -> AsyncIterator[Fakes]:
    """The three providers' fakes in a process of their own (python -m tests.providers.serve)."""
    process = await asyncio.create_subprocess_exec(
        *child_command(sys.executable, "-m", "tests.providers.serve", "--api-key", KEY),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = await process.stdout.readline()
    urls = json.loads(line)
    yield Fakes(urls["elevenlabs"], urls["gcp"], urls["polly"], process)
    process.terminate()
    async with asyncio.timeout(10):
        await process.wait()


def provider_env(fakes: Fakes, **extra: str) -> dict[str, str]:
    return {
        "SPEAKING_REDIS_URL": PRIVATE_REDIS_URL,
        "SPEAKING_ELEVENLABS_API_KEY": KEY,
        "SPEAKING_ELEVENLABS_BASE_URL": fakes.elevenlabs,
        "SPEAKING_GCP_ENDPOINT": fakes.gcp,
        "SPEAKING_GCP_INSECURE": "1",
        "SPEAKING_AWS_ENDPOINT_URL": fakes.polly,
        "SPEAKING_AWS_ACCESS_KEY_ID": "AKIDE2ETEST",
        "SPEAKING_AWS_SECRET_ACCESS_KEY": "e2e-aws-secret",
        **extra,
    }


@pytest.fixture
async def stack(
    private_redis: Redis, fakes: Fakes, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[WorkerProcess, Api, SpeakingClient]]:
    """A worker with every provider configured, and an API whose default is the
    document's (elevenlabs), alone on a private Redis."""
    extra: dict[str, str] = getattr(request, "param", {})
    env = provider_env(fakes, **extra)
    worker = WorkerProcess(f"prov-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log", **env)
    await worker.start()
    api = await start_api(
        private_redis,
        tmp_path / "api.log",
        SPEAKING_REDIS_URL=PRIVATE_REDIS_URL,
        SPEAKING_API_DEFAULT_PROVIDER="elevenlabs",
    )
    try:
        yield worker, api, SpeakingClient(private_redis, worker.worker_id)
    finally:
        await stop_api(api)
        assert await worker.stop() == 0
        secrets = (KEY, "e2e-aws-secret")
        assert not any(s in line for line in worker.lines for s in secrets), "a key in the log"
    assert not worker.errors(), worker.errors()
