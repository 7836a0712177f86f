"""Locks and freeze windows end to end: signed commands and clicks to the real bot process, moto's
DynamoDB, the CodePipeline stand-in whose Deploy action runs the buildspec's own gate
(bot/ci/build_steps.deploy_gate), the local Slack Web API."""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from bot.slack.deploy_card_blocks import APPROVE_ACTION
from handlers.locks import TAKEOVER_ACTION
from sandbox.codepipeline import Execution, PipelineStandIn
from sandbox.slack_workspace import Fault, Message, SlackWorkspace
from tests.handlers.test_deploy import card_text, command, wait_for_card
from tests.support import BackgroundLoop, BotProcess, base_config, wait_until, write_config


def answer(slack: SlackWorkspace, user: str, needle: str, timeout: float = 15) -> Message:
    return wait_until(lambda: next((m for m in reversed(slack.ephemerals(user)) if needle in m.text), None),
                      timeout, f"an answer to {user} saying {needle!r}")


def said(slack: SlackWorkspace, channel: str, needle: str, timeout: float = 15) -> Message:
    return wait_until(lambda: next((m for m in slack.channel_messages(channel) if needle in m.text), None),
                      timeout, f"a message in {channel} saying {needle!r}")


def audit_actions(table: str, env: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").query(TableName=f"{table}-audit", KeyConditionExpression="pk = :pk",
                                           ExpressionAttributeValues={":pk": {"S": f"AUDIT#{env}"}})["Items"]
    return [{k: next(iter(v.values())) for k, v in item.items()} for item in items]


def push(loop: BackgroundLoop, pipeline: PipelineStandIn) -> Execution:
    """A push to main: the pipeline starts with its default variables, never through the bot."""
    async def start() -> Execution:
        return pipeline.start_from_push("dev")
    return loop.run(start())


@pytest.fixture
def gated(pipeline: PipelineStandIn, aws_resources: dict[str, str]) -> PipelineStandIn:
    """The stand-in as CodeBuild's projects have it: progress lines to the bot's queue, and the state table
    for the Deploy action's gate."""
    pipeline.notify_environ = {"PROGRESS_QUEUE_URL": aws_resources["progress_queue_url"]}
    pipeline.state_table = aws_resources["table"]
    return pipeline


def test_a_lock_stops_other_peoples_deploys_and_lets_the_holders_through(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn,
        aws_resources: dict[str, str]):
    command(background_loop, slack, "U0DEV1", "C0PROD", 'lock prod for 2h "INC-42 payments down"')
    answer(slack, "U0DEV1", "prod is locked by <@U0DEV1>")
    note = said(slack, "C0PROD", "locked prod for 2h")
    assert "INC-42 payments down" in note.text and "rollbacks still work" in note.text

    command(background_loop, slack, "U0APPR1", "C0PROD", "deploy employee prod")
    refused = answer(slack, "U0APPR1", "is locked by")
    # who, why, since and until when, in one line
    assert "<@U0DEV1>" in refused.text and "INC-42 payments down" in refused.text
    assert "ago) until" in refused.text and ("(in 1h 59m)" in refused.text or "(in 2h)" in refused.text)
    assert "\n" not in refused.text and not gated.executions
    command(background_loop, slack, "U0APPR1", "C0PROD", 'promote employee override "verified"')
    second = wait_until(lambda: [m for m in slack.ephemerals("U0APPR1") if "is locked by" in m.text][1:], 15,
                        "the promotion refused too")
    assert "INC-42 payments down" in second[0].text and "\n" not in second[0].text and not gated.executions

    command(background_loop, slack, "U0GUEST", "C0PROD", "locks")
    assert "prod is locked by <@U0DEV1>" in answer(slack, "U0GUEST", "dev is not locked").text
    # /erp status shows the lock even where this bot reads no cluster
    command(background_loop, slack, "U0GUEST", "C0PROD", "status prod")
    status = answer(slack, "U0GUEST", "No cluster is configured")
    assert ":lock: prod is locked by <@U0DEV1>" in status.text and "INC-42 payments down" in status.text

    # the holder's own deploy goes, says so on its card, and passes the pipeline's own gate
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval", timeout=30)
    assert "Deployed under <@U0DEV1>'s lock" in card_text(card) and "would refuse" not in card_text(card)
    background_loop.run(slack.click("U0APPR1", card, APPROVE_ACTION))
    wait_for_card(slack, "C0PROD", "Succeeded", timeout=30)
    assert [a["outcome"] for a in audit_actions(aws_resources["table"], "prod") if a["action"] == "deploy"
            and a["actor"] == "U0APPR1"] == ["refused"]


def test_a_card_waiting_for_approval_says_a_lock_taken_after_it_would_stop_it(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn,
        aws_resources: dict[str, str], tmp_path: Path):
    """A prod card already waiting for approval when someone locks prod has no grant under that lock: its
    Deploy stage would refuse it. The release manager reads that on the card before approving, and the card
    says nothing of it again once the lock is gone, by `/erp unlock` or by its expiry (the sweep). An edit
    Slack refused is made by the next sweep, and a card another deploy of its service replaced among the
    waiting ones still loses its note."""
    process = BotProcess({**bot_env, "LOCK_SWEEP_SECONDS": "0.5"}, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"

    def card(ts: str) -> str:
        return card_text(next(m for m in slack.channel_messages("C0PROD") if m.ts == ts))
    try:
        command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
        first = wait_for_card(slack, "C0PROD", "Waiting for approval", timeout=30).ts
        assert "is locked by" not in card(first)
        slack.faults.append(Fault("chat.update", error="internal_error"))  # the lock's edit of the card fails
        command(background_loop, slack, "U0APPR1", "C0PROD", 'lock prod for 1h "INC-9 payments down"')
        answer(slack, "U0APPR1", "prod is locked by <@U0APPR1>")
        wait_until(lambda: "prod is locked by <@U0APPR1>" in card(first), 15, "the lock on the waiting card")
        assert "INC-9 payments down" in card(first) and "Deploy stage would refuse it" in card(first)
        assert "Waiting for approval" in card(first)

        # a start from the console of the same service takes the first one's place among the waiting ones
        async def console_start() -> Execution:
            return gated.start({"ENVIRONMENT": "prod", "SERVICE": "employee"}, trigger_type="StartPipelineExecution",
                               trigger_detail="arn:aws:sts::806332783810:assumed-role/Admin/someone")
        background_loop.run(console_start())
        second = wait_until(lambda: next((m.ts for m in slack.channel_messages("C0PROD") if m.ts != first
                                          and "Waiting for approval" in card_text(m)), None), 30, "the second card")
        wait_until(lambda: "prod is locked by <@U0APPR1>" in card(second), 15, "the lock on the second card")
        command(background_loop, slack, "U0APPR1", "C0PROD", "unlock prod")
        answer(slack, "U0APPR1", "prod is unlocked")
        wait_until(lambda: "is locked by" not in card(first) and "is locked by" not in card(second), 15,
                   "the lock off both cards, the replaced one too")

        # a new lock, which then expires (the sweep): the card says nothing of it any more
        command(background_loop, slack, "U0APPR1", "C0PROD", "lock prod for 1h")
        wait_until(lambda: "prod is locked by <@U0APPR1>" in card(second), 15, "the new lock on the card")
        boto3.client("dynamodb").update_item(
            TableName=aws_resources["table"], Key={"pk": {"S": "LOCK#prod"}, "sk": {"S": "CURRENT"}},
            UpdateExpression="SET #u = :u", ExpressionAttributeNames={"#u": "until"},
            ExpressionAttributeValues={":u": {"N": str(int(time.time()) - 1)}})
        said(slack, "C0PROD", "<@U0APPR1>'s lock on prod expired")
        wait_until(lambda: "is locked by" not in card(second), 15, "the lock off the card")
    finally:
        process.stop_soon()


def test_the_pipeline_started_from_the_console_or_a_push_obeys_the_lock(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn):
    """A push to main never passes through the bot: the Deploy action checks before helm runs, fails with the
    reason, and the card's thread says why."""
    command(background_loop, slack, "U0DEV1", "C0DEV", "lock dev for 1h migrating the employee schema")
    answer(slack, "U0DEV1", "dev is locked by <@U0DEV1>")
    execution = push(background_loop, gated)
    card = wait_for_card(slack, "C0DEV", "Failed", timeout=40)
    assert gated.executions[execution.id].actions[("Deploy", "Deploy")].status == "Failed"
    assert gated.executions[execution.id].actions[("Build", "Build")].status == "Succeeded"

    def why() -> str | None:
        return next((m.text for m in slack.thread("C0DEV", card.ts) if "not deploying" in m.text), None)
    reason = wait_until(why, 20, "the reason in the card's thread")
    assert "dev is locked by Slack user U0DEV1" in reason and "migrating the employee schema" in reason
    # once unlocked, the next push deploys
    command(background_loop, slack, "U0DEV1", "C0DEV", "unlock dev")
    answer(slack, "U0DEV1", "dev is unlocked")
    said(slack, "C0DEV", "unlocked dev")
    second = push(background_loop, gated)
    wait_until(lambda: gated.executions[second.id].status == "Succeeded", 40, "the next push to deploy")


def test_taking_over_asks_first_tells_the_holder_and_is_audited(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, aws_resources: dict[str, str]):
    command(background_loop, slack, "U0DEV1", "C0PROD", "lock prod 30m testing the release")
    answer(slack, "U0DEV1", "prod is locked by <@U0DEV1>")
    command(background_loop, slack, "U0ONCALL", "C0PROD", "lock prod 1h INC-7 rollback in progress")
    ask = answer(slack, "U0ONCALL", "Take it over?")
    assert "testing the release" in ask.text
    # nothing changed before the click
    command(background_loop, slack, "U0GUEST", "C0PROD", "locks")
    assert "locked by <@U0DEV1>" in answer(slack, "U0GUEST", "locked by").text
    as_first_shown = copy.deepcopy(ask)  # Slack may deliver a second click from the same message
    background_loop.run(slack.click("U0ONCALL", ask, TAKEOVER_ACTION))
    told = said(slack, "C0PROD", "took over prod's lock from <@U0DEV1>")
    assert "INC-7 rollback in progress" in told.text and "<@U0ONCALL>" in told.text
    answer(slack, "U0ONCALL", "prod is locked by <@U0ONCALL>")
    [takeover] = [a for a in audit_actions(aws_resources["table"], "prod") if a["action"] == "lock_takeover"]
    assert takeover["actor"] == "U0ONCALL" and takeover["outcome"] == "ok" and "U0DEV1" in takeover["detail"]
    # a second click on the same question does not take it again from its new holder
    background_loop.run(slack.click("U0ONCALL", as_first_shown, TAKEOVER_ACTION))
    answer(slack, "U0ONCALL", "lock changed since you asked")

    # only the holder or an approver may unlock
    command(background_loop, slack, "U0DEV1", "C0PROD", "unlock prod")
    assert "Only <@U0ONCALL>, who holds the lock, or" in answer(slack, "U0DEV1", ":no_entry:").text
    command(background_loop, slack, "U0APPR1", "C0PROD", "unlock prod")
    answer(slack, "U0APPR1", "prod is unlocked")
    assert "(held by <@U0ONCALL>)" in said(slack, "C0PROD", "<@U0APPR1> unlocked prod").text


def test_a_lock_reminds_its_holder_once_and_says_when_it_expired(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop,
        aws_resources: dict[str, str], tmp_path: Path):
    process = BotProcess({**bot_env, "LOCK_SWEEP_SECONDS": "0.5"}, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    try:
        command(background_loop, slack, "U0DEV1", "C0DEV", "lock dev for 2h")
        answer(slack, "U0DEV1", "dev is locked by <@U0DEV1>")
        time.sleep(1.5)
        assert not [m for m in slack.channel_messages("C0DEV") if "your lock on dev expires" in m.text]
        table = aws_resources["table"]
        ddb = boto3.client("dynamodb")

        def move_until(seconds_from_now: int) -> None:  # the clock moves on: the lock's end comes near
            ddb.update_item(TableName=table, Key={"pk": {"S": "LOCK#dev"}, "sk": {"S": "CURRENT"}},
                            UpdateExpression="SET #u = :u", ExpressionAttributeNames={"#u": "until"},
                            ExpressionAttributeValues={":u": {"N": str(int(time.time()) + seconds_from_now)}})
        move_until(600)
        reminder = said(slack, "C0DEV", "your lock on dev expires")
        assert reminder.text.startswith(":hourglass: <@U0DEV1>") and "/erp lock dev for 1h" in reminder.text
        time.sleep(2)
        assert len([m for m in slack.channel_messages("C0DEV") if "your lock on dev expires" in m.text]) == 1
        move_until(-1)
        said(slack, "C0DEV", "<@U0DEV1>'s lock on dev expired")
        assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "LOCK#dev"}, "sk": {"S": "CURRENT"}})
        command(background_loop, slack, "U0GUEST", "C0DEV", "locks")
        answer(slack, "U0GUEST", "dev is not locked")
    finally:
        process.stop_soon()


def test_locking_again_never_shortens_a_lock_and_a_lapsed_one_taken_is_said_expired(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop,
        aws_resources: dict[str, str], tmp_path: Path):
    """Review findings: the holder's `/erp lock dev "new reason"` set the end to now + the default (2h), cutting
    a 6h lock short while the audit said "extended"; and a lock that had run out but was not swept yet was
    taken by someone else without its holder ever being told it expired."""
    process = BotProcess({**bot_env, "LOCK_SWEEP_SECONDS": "3600"}, tmp_path / "bot.log")  # no sweep in between
    slack.bot_url = f"{process.url}/slack/events"
    try:
        command(background_loop, slack, "U0DEV1", "C0DEV", "lock dev for 6h schema migration")
        answer(slack, "U0DEV1", "dev is locked by <@U0DEV1>")
        command(background_loop, slack, "U0DEV1", "C0DEV", "lock dev schema migration, step 2")
        kept = answer(slack, "U0DEV1", "step 2")
        assert "(in 5h 59m)" in kept.text or "(in 6h)" in kept.text, kept.text

        boto3.client("dynamodb").update_item(
            TableName=aws_resources["table"], Key={"pk": {"S": "LOCK#dev"}, "sk": {"S": "CURRENT"}},
            UpdateExpression="SET #u = :u", ExpressionAttributeNames={"#u": "until"},
            ExpressionAttributeValues={":u": {"N": str(int(time.time()) - 5)}})
        command(background_loop, slack, "U0ONCALL", "C0DEV", "lock dev for 1h INC-9")
        answer(slack, "U0ONCALL", "dev is locked by <@U0ONCALL>")
        said(slack, "C0DEV", "<@U0DEV1>'s lock on dev expired")
        assert "lock_expired" in [a["action"] for a in audit_actions(aws_resources["table"], "dev")]
    finally:
        process.stop_soon()


def freeze_now() -> dict[str, Any]:
    """A freeze that holds now (UTC): a span from an hour ago to three hours from now."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return {"timezone": "UTC", "mode": "deny", "windows": [
        {"name": "release freeze", "from": (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M"),
         "to": (now + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")}]}


def test_a_freeze_refuses_deploys_until_it_opens_and_an_approver_may_break_the_glass(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn,
        aws_resources: dict[str, str], tmp_path: Path):
    config = base_config(aws_resources["queue_url"], aws_resources["table"], aws_resources["progress_queue_url"])
    config["environments"]["prod"]["freeze"] = freeze_now()
    config["environments"]["dev"]["freeze"] = freeze_now()
    path = write_config(tmp_path / "frozen.yaml", config)
    process = BotProcess({**bot_env, "BOT_CONFIG": str(path)}, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    try:
        command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
        refused = answer(slack, "U0DEV1", ":snowflake:")
        # the window closes 3 h after the minute the config was written in: the bot's start and the answer
        # take seconds, so it may be a minute less by then (a loaded machine once took it past the minute)
        assert "prod is frozen (release freeze) until" in refused.text
        assert re.search(r"\(in 2h 5[89]m\)", refused.text), refused.text
        assert "break-glass <reason>" in refused.text and not gated.executions
        command(background_loop, slack, "U0DEV1", "C0PROD", "freeze prod")
        assert "prod is frozen" in answer(slack, "U0DEV1", "UTC, deny mode").text
        command(background_loop, slack, "U0DEV1", "C0PROD", "status prod")
        assert ":snowflake: prod is frozen (release freeze) until" in answer(slack, "U0DEV1", "No cluster").text
        # a deployer who is not an approver cannot break the glass
        command(background_loop, slack, "U0DEV1", "C0PROD", 'deploy employee prod break-glass "hotfix"')
        assert "You can't break the glass: only" in answer(slack, "U0DEV1", ":no_entry:").text
        # an approver can, for one deploy; the card shows it; another approver still approves
        command(background_loop, slack, "U0APPR1", "C0PROD", 'deploy employee prod break-glass "INC-42 payments fix"')
        card = wait_for_card(slack, "C0PROD", "Waiting for approval", timeout=30)
        assert "Freeze broken by <@U0APPR1>" in card_text(card) and "INC-42 payments fix" in card_text(card)
        background_loop.run(slack.click("U0ONCALL", card, APPROVE_ACTION))
        wait_for_card(slack, "C0PROD", "Succeeded", timeout=40)
        [broken] = [a for a in audit_actions(aws_resources["table"], "prod") if a["action"] == "break_glass"]
        assert broken["actor"] == "U0APPR1" and broken["detail"] == "INC-42 payments fix"
        # a push during the freeze does not deploy, and the card's thread says why
        frozen = push(background_loop, gated)
        wait_until(lambda: frozen.status == "Failed", 40, "the frozen push to fail at Deploy")
        assert gated.executions[frozen.id].actions[("Deploy", "Deploy")].status == "Failed"
        pushed = wait_for_card(slack, "C0DEV", "Failed", timeout=30)
        reason = wait_until(lambda: next((m.text for m in slack.thread("C0DEV", pushed.ts)
                                          if "not deploying" in m.text), None), 20, "the reason in the thread")
        assert "dev is frozen (release freeze) until" in reason and "break-glass &lt;reason&gt;" in reason  # escaped
        # a promotion is refused by the freeze as a deploy is, and says how to break the glass for it
        command(background_loop, slack, "U0DEV1", "C0PROD", "promote employee")
        refused = answer(slack, "U0DEV1", "`/erp promote employee break-glass <reason>`")
        assert refused.text.startswith(":snowflake: prod is frozen (release freeze) until") and not \
            [e for e in gated.executions.values() if e.variables.get("PROMOTE_IMAGE", "").strip()]
    finally:
        process.stop_soon()


def test_erp_freeze_shows_each_environment_open_or_frozen_and_its_next_windows(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop,
        aws_resources: dict[str, str], tmp_path: Path):
    config = base_config(aws_resources["queue_url"], aws_resources["table"], aws_resources["progress_queue_url"])
    from zoneinfo import ZoneInfo

    seoul = ZoneInfo("Asia/Seoul")
    start = (datetime.now(seoul) + timedelta(days=10)).replace(hour=18, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=2)).replace(hour=9)
    config["environments"]["prod"]["freeze"] = {"timezone": "Asia/Seoul", "mode": "deny", "windows": [
        {"name": "year-end close", "from": f"{start:%Y-%m-%d %H:%M}", "to": f"{end:%Y-%m-%d %H:%M}"}]}
    path = write_config(tmp_path / "calendar.yaml", config)
    process = BotProcess({**bot_env, "BOT_CONFIG": str(path)}, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    try:
        command(background_loop, slack, "U0DEV1", "C0PROD", "freeze")
        shown = answer(slack, "U0DEV1", "has no freeze windows").text
        assert shown.startswith(":white_circle: dev has no freeze windows.")
        assert ":large_green_circle: prod is open for deploys (Asia/Seoul, deny mode); the next freeze starts" \
            f" {start:%a %d %b %H:%M} KST (in 9d " in shown or f"{start:%H:%M} KST (in 10d" in shown, shown
        assert f"• year-end close: {start:%a %d %b %H:%M} KST to {end:%a %d %b %H:%M} KST" in shown
        seen = len(slack.ephemerals("U0DEV1"))  # the first answer says "prod is open" too: wait for the next one
        command(background_loop, slack, "U0DEV1", "C0PROD", "freeze prod")
        only_prod = wait_until(lambda: next((m for m in slack.ephemerals("U0DEV1")[seen:]
                                             if "prod is open for deploys" in m.text), None), 15, "the answer to freeze prod")
        assert "dev" not in only_prod.text
    finally:
        process.stop_soon()


def test_the_calendar_the_pipeline_reads_is_the_one_in_the_bots_config(
        bot: BotProcess, aws_resources: dict[str, str], background_loop: BackgroundLoop):
    """The Deploy role cannot read the bot's config: the bot publishes each environment's calendar, and one
    that says nothing (no freeze) is said explicitly, so a missing record stops a deploy instead."""
    from bot.ci.build_steps import StepFailed, deploy_gate

    item = wait_until(lambda: boto3.client("dynamodb").get_item(
        TableName=aws_resources["table"], Key={"pk": {"S": "RULES#prod"}, "sk": {"S": "FREEZE"}}).get("Item"),
        20, "the published calendar")
    assert item["freeze"]["S"] == "null"
    deploy_gate({"STATE_TABLE": aws_resources["table"], "PIPELINE_EXECUTION_ID": "e-1"}, "prod")  # open
    with pytest.raises(StepFailed, match="has not published staging's freeze calendar"):
        deploy_gate({"STATE_TABLE": aws_resources["table"], "PIPELINE_EXECUTION_ID": "e-1"}, "staging")
    with pytest.raises(StepFailed, match="STATE_TABLE is not set"):
        deploy_gate({"PIPELINE_EXECUTION_ID": "e-1"}, "prod")


def test_an_extension_a_moment_before_expiry_is_neither_expired_nor_reminded_by_a_stale_read(
        aws_resources: dict[str, str]):
    """Review finding: the sweeper read lock L, the holder extended it (same lock, later end), and the
    sweeper's delete still matched L's id: the extended lock vanished and the channel read "expired". Its
    reminder could land on the extended lock too. Both now hold only for the lock as read, end included."""
    import asyncio

    from bot.aws.clients import AwsClients
    from bot.aws.state import StateStore
    from bot.delivery.deploy_gate import EnvLock

    state = StateStore(AwsClients(), aws_resources["table"])
    now = int(time.time())
    read_by_sweeper = EnvLock("dev", "U0DEV1", "migration", now - 7200, now)
    assert asyncio.run(state.take_lock(read_by_sweeper))
    extended = EnvLock("dev", "U0DEV1", "migration", read_by_sweeper.since, now + 3600, id=read_by_sweeper.id)
    assert asyncio.run(state.take_lock(extended, replacing=read_by_sweeper))
    assert not asyncio.run(state.release_lock(read_by_sweeper))
    assert not asyncio.run(state.mark_lock_reminded(read_by_sweeper))
    still = asyncio.run(state.get_lock("dev"))
    assert still is not None and still.until == now + 3600 and not still.reminded
    assert asyncio.run(state.mark_lock_reminded(still)) and asyncio.run(state.release_lock(still))
