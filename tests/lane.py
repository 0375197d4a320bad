"""Which lane of a parallel test run this process is, and the services that lane owns.

``scripts/test.sh`` runs the suite in several pytest-xdist processes at once (most e2e
time is spent waiting for real-time audio, not on the CPU). Lanes share nothing: lane
``k`` (xdist's worker ``gwk``; 0 without xdist) has its own Asterisk instances, Redis
servers and SIPp port range, so a test that freezes Asterisk or restarts Redis disturbs
only its own lane. Every port of a lane is derived here, from the lane's number.
"""

from __future__ import annotations

import os

LANE = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0")
LANES = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
#: Asterisk instances per lane: the lane's own, and a second machine (scale-out tests).
INSTANCES_PER_LANE = 2
#: Each lane's Redis ports lie in a block of this many above the base port.
REDIS_BLOCK = 100
#: SIPp's ports (tests/telephony/sipp_process.py): between Asterisk's RTP ranges
#: (up to 29999 for instance 9) and the kernel's ephemeral ports (32768+), one slice each.
SIPP_PORTS = (30000, 32700)


def sipp_port_range() -> tuple[int, int]:
    """This lane's slice of ``SIPP_PORTS``: lanes never pick the same port."""
    low, high = SIPP_PORTS
    width = (high - low) // LANES
    return low + LANE * width, low + (LANE + 1) * width
