"""The edges hold, probed as an attacker with a valid key would, against the real API,
worker, Asterisk and SIPp: one call is one session however its id is spelled, ids that
are no Asterisk id are refused with the rule, a caller cannot choose its call's owner,
and nothing a request carries can forge a log line. Every refusal is checked to have
changed nothing: the session already on the call is still the only one, still active.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.api_fixtures import Api
from tests.e2e.conftest import CallFactory
from tests.e2e.test_api import create, post_create, wait_active
from tests.telephony.ari import AriError

pytestmark = pytest.mark.e2e

MALFORMED = {
    "NUL inside": "{id}\u0000x",
    "dot dot": "..",
    "dot": ".",
    "slash": "{id}/../x",
    "newline": "{id}\nx",
    "escape sequence": "{id}\u001b[2J",
    "line separator": "{id}\u2028",
    "non-ASCII letter": "pbx0-é",
    "too long": "a" * 129,
}
RULE = "each a letter, a digit or one of . _ - + : @ (and not only dots)"


async def sessions_on(api: Api, reference_id: str) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/v1.0/speakings?page_size=100")
    assert status == 200, body
    return [s for s in body["result"] if s["reference_id"] == reference_id]


async def test_aliases_of_one_call_are_one_session(api: Api, call: CallFactory) -> None:
    """With a session active on a call, a create for the same id in another case (Asterisk
    finds the channel either way) is 409 naming the existing session, and malformed
    variants (NUL, control characters, separators, '..') are 400 with the rule; the
    first session is still the only one on the call, and still active."""
    async with call() as c:
        first = await create(api, c)
        await wait_active(api, first["id"])
        upper = c.caller_channel_id.upper()
        assert upper != c.caller_channel_id
        status, body = await post_create(api, upper, direction="both")
        assert status == 409, body
        assert body["error"]["details"]["existing_speaking_id"] == first["id"], body
        for name, template in MALFORMED.items():
            status, body = await post_create(api, template.format(id=c.caller_channel_id))
            assert status == 400, (name, body)
            assert RULE in body["error"]["message"], (name, body)
        for reference_type in ("call", "confbridge"):
            status, body = await api.call(
                "POST",
                "/v1.0/speakings",
                json={"reference_type": reference_type, "reference_id": "..", "language": "en-US"},
            )
            assert status == 400 and RULE in body["error"]["message"], (reference_type, body)
        on_call = await sessions_on(api, c.caller_channel_id)
        assert [s["id"] for s in on_call if s["status"] != "stopped"] == [first["id"]]
        assert (await api.call("GET", f"/v1.0/speakings/{first['id']}"))[1]["status"] == "active"
        assert (await api.call("POST", f"/v1.0/speakings/{first['id']}/stop"))[0] == 200


async def test_a_created_session_names_the_call_as_asterisk_spells_it(
    api: Api, call: CallFactory
) -> None:
    """A create naming the call in another case attaches to that call, and the session
    (and its lock) carry the channel's own id."""
    async with call() as c:
        status, body = await post_create(api, c.caller_channel_id.upper(), direction="in")
        assert status == 201, body
        assert body["reference_id"] == c.caller_channel_id
        await wait_active(api, body["id"])
        status, again = await post_create(api, c.caller_channel_id, direction="in")
        assert status == 409 and again["error"]["details"]["existing_speaking_id"] == body["id"]
        assert (await api.call("POST", f"/v1.0/speakings/{body['id']}/stop"))[0] == 200


async def test_a_caller_cannot_choose_the_owner_of_its_call(api: Api, call: CallFactory) -> None:
    """A call from a SIP peer the operator did not mark trusted (the endpoint "stranger",
    127.0.0.2) carries X-Customer-Id: cust-1; the header is ignored, the call has no
    owner, and cust-1's create is 404 as for a call that does not exist."""
    async with call(caller_ip="127.0.0.2", customer_id="cust-1") as c:
        with pytest.raises(AriError) as unset:  # never set on the channel
            await c.ari.request(
                "GET",
                f"/channels/{c.caller_channel_id}/variable",
                variable="SPEAKING_CUSTOMER_ID",
            )
        assert unset.value.status == 404
        status, body = await post_create(api, c.caller_channel_id)
        assert status == 404, body
        assert await sessions_on(api, c.caller_channel_id) == []


async def test_what_a_request_carries_cannot_forge_a_log_line(api: Api) -> None:
    """Paths and bodies with newlines, NEL, U+2028, CSI sequences and NUL: every line the
    API logged since is one JSON object of printable ASCII."""
    lines = api.process.lines
    before = len(lines)
    nasty = ["a\nb", "a\u0085b", "a\u2028b", "\u001b[2J\u001b[31m", "a\u0000b", '"}\n{"x":"']
    for text in nasty:
        await api.call("GET", "/v1.0/speakings/" + quote(text, safe=""))
        await api.call("POST", "/v1.0/speakings", json={"reference_id": text})
    marker = f"/v1.0/speakings/end-of-probes-{uuid.uuid4().hex}"
    await api.call("GET", marker)
    async with asyncio.timeout(10):  # the log is read from the process's stderr
        while not any(marker in line for line in lines[before:]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    written = lines[before:]
    assert len(written) >= 2 * len(nasty)
    for line in written:
        line = line.rstrip("\n")
        assert all(" " <= ch <= "~" for ch in line), line
        assert isinstance(json.loads(line), dict)
