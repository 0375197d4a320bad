"""Fuzz the live API from its own OpenAPI document with schemathesis: whatever a client
sends, the API never answers 5xx, and every response matches the document.

Runs schemathesis' command line against the real API process (with a worker, Redis and
Asterisk behind it), authenticated as a customer with a Bearer key."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.e2e.api_fixtures import Api

pytestmark = pytest.mark.e2e


async def test_no_5xx_and_every_response_matches_the_schema(api: Api, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is in the dev group of uv.lock (scripts/setup.sh installs it)"
    process = await asyncio.create_subprocess_exec(
        st,
        "run",
        f"{api.base}/v1.0/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance,"
        "content_type_conformance",
        "--header",
        f"Authorization: Bearer {api.key}",
        "--max-examples",
        os.environ.get("SPEAKING_FUZZ_EXAMPLES", "40"),
        "--seed",
        os.environ.get("SPEAKING_FUZZ_SEED", "20261130"),
        "--request-timeout",
        "15",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(300):
        output, _ = await process.communicate()
    text = output.decode(errors="replace").replace(api.key, "<key>")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert process.returncode == 0, text[-12000:]
