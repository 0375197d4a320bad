"""The chaos soak (bench/soak.py) in its 2-minute version: random commands on real calls
through the API while Redis restarts, the worker is killed, ARI connections are reset
and Asterisk freezes; afterwards nothing is left, lost or answered twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run_soak

pytestmark = [pytest.mark.e2e, pytest.mark.deadline(330), pytest.mark.timeout(400)]


async def test_two_minutes_of_chaos_leave_nothing_behind(tmp_path: Path) -> None:
    report = await run_soak(minutes=2.0, calls=4, seed=20261201, workdir=tmp_path)
    print(report)
    assert report["asterisk_leftovers"] == []
    assert report["stale_locks"] == []
    assert report["pending_entries"] == 0
    assert report["commands"]["unanswered"] == 0 and report["commands"]["answered_twice"] == 0
    assert report["commands"]["reached_a_worker"] > 100  # the soak really drove the worker
    assert report["api_500s"] == 0 and report["task_deaths"] == 0
    assert sum(report["faults"].values()) >= 4
    assert report["ok"]
