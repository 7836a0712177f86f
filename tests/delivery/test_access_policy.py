from __future__ import annotations

import pytest

from bot.config import parse_config
from bot.delivery.access_policy import AccessPolicy
from bot.slack.user_groups import UserGroups
from bot.slack.web_client import make_web_client
from sandbox.slack_workspace import Fault, SlackWorkspace
from tests.support import BOT_TOKEN, base_config

CONFIG = parse_config(base_config("q", "t"), "test.yaml")
# prod: approvers U0APPR1 + group S0ONCALL (U0ONCALL, U0APPR1); deployers U0DEV1 + group S0APPROVERS (U0APPR1)


def policy_for(slack: SlackWorkspace) -> AccessPolicy:
    return AccessPolicy(CONFIG, UserGroups(make_web_client(BOT_TOKEN, f"{slack.base_url}/api/")).members)


@pytest.mark.parametrize(("action", "user", "env", "requested_by", "allowed", "reason"), [
    ("deploy", "U0DEV1", "prod", None, True, ""),
    ("deploy", "U0APPR1", "prod", None, True, ""),  # through S0APPROVERS
    ("deploy", "U0ONCALL", "prod", None, False, "You can't deploy to prod: only <@U0DEV1> or <!subteam^S0APPROVERS> can."),
    ("deploy", "U0ANYONE", "dev", None, True, ""),  # dev has no deployers list: anyone
    ("rollback", "U0ONCALL", "prod", None, False, "You can't roll back prod: only <@U0DEV1> or <!subteam^S0APPROVERS> can."),
    ("approve", "U0APPR1", "prod", "U0DEV1", True, ""),
    ("approve", "U0ONCALL", "prod", "U0DEV1", True, ""),  # through S0ONCALL
    ("approve", "U0DEV1", "prod", "U0APPR1", False, "You can't approve prod deploys: only <@U0APPR1> or <!subteam^S0ONCALL> can."),
    ("approve", "U0APPR1", "prod", "U0APPR1", False, "You asked for this deploy, so someone else must approve it: <@U0APPR1> or <!subteam^S0ONCALL>."),
    ("approve", "U0APPR1", "dev", "U0DEV1", False, "dev has no approvers configured"),
])
async def test_who_may_do_what(slack: SlackWorkspace, action: str, user: str, env: str,
                               requested_by: str | None, allowed: bool, reason: str):
    policy = policy_for(slack)
    if action == "deploy":
        decision = await policy.can_deploy(user, env)
    elif action == "rollback":
        decision = await policy.can_rollback(user, env)
    else:
        decision = await policy.can_approve(user, env, requested_by)
    assert decision.allowed is allowed
    assert reason in decision.reason


async def test_group_membership_is_cached_briefly(slack: SlackWorkspace):
    groups = UserGroups(make_web_client(BOT_TOKEN, f"{slack.base_url}/api/"), cache_seconds=60)
    policy = AccessPolicy(CONFIG, groups.members)
    for _ in range(3):
        assert await policy.can_approve("U0ONCALL", "prod", "U0DEV1")
    assert len(slack.calls_to("usergroups.users.list")) == 1
    slack.groups["S0ONCALL"] = []  # taken off the rota
    assert await policy.can_approve("U0ONCALL", "prod", "U0DEV1")  # within the minute: still cached
    fresh = AccessPolicy(CONFIG, UserGroups(make_web_client(BOT_TOKEN, f"{slack.base_url}/api/"),
                                            cache_seconds=0).members)
    assert not await fresh.can_approve("U0ONCALL", "prod", "U0DEV1")


async def test_unknown_membership_fails_closed(slack: SlackWorkspace):
    slack.faults.append(Fault("usergroups.users.list", error="missing_scope", times=5))
    decision = await policy_for(slack).can_approve("U0ONCALL", "prod", "U0DEV1")
    assert not decision.allowed
    assert "couldn't check membership of <!subteam^S0ONCALL>" in decision.reason
