"""Who may do what: every handler asks here before it changes anything.

Principals in the config are Slack user IDs (U.../W...) or user-group IDs
(S...); a group's members come from the Slack adapter (`usergroups.users.list`,
cached briefly), handed in as `group_members`.
When membership cannot be checked, the answer is no (fail closed), with a
reason that says so. Nobody approves their own deploy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.config import Config


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


def mention(principal: str) -> str:
    return f"<!subteam^{principal}>" if principal.startswith("S") else f"<@{principal}>"


def mention_list(principals: tuple[str, ...] | list[str]) -> str:
    names = [mention(p) for p in principals]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


class MembershipUnknown(Exception):
    pass


GroupMembers = Callable[[str], Awaitable[frozenset[str]]]  # user-group ID -> its members; may raise MembershipUnknown


class AccessPolicy:
    def __init__(self, config: Config, group_members: GroupMembers) -> None:
        self.config = config
        self._group_members = group_members  # the Slack adapter's look-up (bot/slack/user_groups.py)

    async def is_member(self, user_id: str, principals: tuple[str, ...]) -> bool:
        if user_id in principals:
            return True
        for p in principals:
            if p.startswith("S") and user_id in await self._group_members(p):
                return True
        return False

    async def _check(self, user_id: str, principals: tuple[str, ...], refusal: str) -> Decision:
        try:
            if await self.is_member(user_id, principals):
                return ALLOWED
        except MembershipUnknown as e:
            return Decision(False, f"I couldn't check membership of {mention(str(e))} with Slack just now,"
                                   " so nothing was changed. Try again in a minute.")
        return Decision(False, f"{refusal} {mention_list(principals)} can.")

    async def can_deploy(self, user_id: str, env: str) -> Decision:
        deployers = self.config.environments[env].deployers
        if deployers is None:
            return ALLOWED
        return await self._check(user_id, deployers, f"You can't deploy to {env}: only")

    async def can_rollback(self, user_id: str, env: str) -> Decision:
        deployers = self.config.environments[env].deployers
        if deployers is None:
            return ALLOWED
        return await self._check(user_id, deployers, f"You can't roll back {env}: only")

    async def can_read(self, user_id: str, env: str) -> Decision:
        readers = self.config.readers_of(env)
        if readers is None:
            return ALLOWED
        return await self._check(user_id, readers, f"You can't read {env}'s logs: only")

    async def can_approve(self, user_id: str, env: str, requested_by: str | None) -> Decision:
        environment = self.config.environments[env]
        if requested_by and user_id == requested_by:
            others = mention_list(environment.approvers) if environment.approvers else "another approver"
            return Decision(False, f"You asked for this deploy, so someone else must approve it: {others}.")
        if not environment.approvers:
            return Decision(False, f"{env} has no approvers configured, so nobody can approve here.")
        return await self._check(user_id, environment.approvers, f"You can't approve {env} deploys: only")

    async def can_lock(self, user_id: str, env: str) -> Decision:
        """Who may deploy there, and its approvers (who often lock during an incident)."""
        environment = self.config.environments[env]
        if environment.deployers is None:
            return ALLOWED
        return await self._check(user_id, tuple(dict.fromkeys(environment.deployers + environment.approvers)),
                                 f"You can't lock {env}: only")

    async def is_approver(self, user_id: str, env: str, refusal: str) -> Decision:
        """An approver of `env`; `refusal` starts the answer otherwise ("You can't break the glass: only")."""
        approvers = self.config.environments[env].approvers
        if not approvers:
            return Decision(False, f"{env} has no approvers configured, so nobody can do that here.")
        return await self._check(user_id, approvers, refusal)
