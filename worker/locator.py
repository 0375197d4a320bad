"""The answer to ``locate``: does this worker's Asterisk hold the reference, and whose is it?

Used by the API to route a create to the worker beside the call or conference. The
owner is the channel variable ``owner_variable`` (set by whoever created the call):
read on the call's channel, or on a conference's participants (conference.common_owner).
"""

from __future__ import annotations

from typing import Any

from worker.ari import AriClient, channel_var
from worker.commands import Locate
from worker.conference_media import conference_owner
from worker.model import ReferenceType


async def locate(
    ari: AriClient, command: Locate, owner_variable: str, providers: list[str]
) -> dict[str, Any]:
    """The reply body (without ``ok``/``command_id``). Raises ARI failures."""
    if command.reference_type is ReferenceType.CONFBRIDGE:
        found, owner = await conference_owner(ari, command.reference_id, owner_variable)
        return {"found": found, "state": "", "owner": owner, "providers": providers}
    channel = await ari.channel(command.reference_id)
    owner = ""
    if channel is not None and owner_variable:
        known = channel_var(channel, owner_variable)
        if known is None:  # not among ari.conf's channelvars: one more request
            known = await ari.get_variable(command.reference_id, owner_variable)
        owner = known or ""
    return {
        "found": channel is not None,
        "state": str(channel.get("state", "")) if channel else "",
        "owner": owner,
        "providers": providers,
        # The id as Asterisk holds it: its lookup ignores case, so "PBX0-1.2" finds
        # "pbx0-1.2"; the API creates with this one, so one call has one lock.
        "reference_id": str(channel.get("id", command.reference_id)) if channel else "",
    }
