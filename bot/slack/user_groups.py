"""Slack user groups' members, for the access policy: `usergroups.users.list`, cached briefly.

When Slack cannot say who is in a group the answer is `MembershipUnknown`, and
the policy says no (fail closed).
"""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery.access_policy import MembershipUnknown

log = logging.getLogger(__name__)


class UserGroups:
    def __init__(self, client: AsyncWebClient, cache_seconds: float = 60.0) -> None:
        self.client = client
        self.cache_seconds = cache_seconds
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}

    async def members(self, group_id: str) -> frozenset[str]:
        cached = self._groups.get(group_id)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        try:
            resp = await self.client.usergroups_users_list(usergroup=group_id)
        except SlackApiError as e:
            log.warning("cannot resolve user group %s: %s", group_id, e.response.get("error"))
            raise MembershipUnknown(group_id) from None
        members = frozenset(resp.get("users") or [])
        self._groups[group_id] = (now + self.cache_seconds, members)
        return members
