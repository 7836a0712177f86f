"""Deploys end to end: signed commands and clicks, the real bot process, moto's SQS and
DynamoDB, the CodePipeline stand-in emitting AWS's event shapes, the local Slack Web API."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from slack_sdk import WebClient

from bot.aws.clients import AwsClients
from bot.aws.state import StateStore
from bot.card_store import CardStore
from bot.delivery.deploy_card import DeployCard
from bot.slack.deploy_card_blocks import APPROVE_ACTION, REJECT_ACTION, ROLLBACK_ACTION, render_card
from sandbox.codepipeline import Execution, PipelineStandIn
from sandbox.slack_workspace import Fault, Message, SlackWorkspace
from tests.support import BOT_TOKEN, BackgroundLoop, BotProcess, base_config, http, wait_until, write_config


def card_text(message: Message) -> str:
    return json.dumps(message.blocks)


def the_card(slack: SlackWorkspace, channel: str) -> Message:
    cards = [m for m in slack.channel_messages(channel) if "Deploy " in card_text(m)]
    assert len(cards) == 1, f"expected one card in {channel}, found {len(cards)}"
    return cards[0]


def wait_for_card(slack: SlackWorkspace, channel: str, needle: str, timeout: float = 20) -> Message:
    def ready() -> Message | None:
        cards = [m for m in slack.channel_messages(channel) if "Deploy " in card_text(m)]
        return cards[0] if cards and needle in card_text(cards[0]) else None
    return wait_until(ready, timeout, f"a card in {channel} showing {needle!r}")


def buttons(message: Message) -> list[str]:
    return [el.get("action_id") for b in message.blocks if b["type"] == "actions" for el in b["elements"]]


def command(loop: BackgroundLoop, slack: SlackWorkspace, user: str, channel: str, text: str) -> None:
    status, _ = loop.run(slack.send_command(user, channel, text))
    assert status == 200


def test_dev_deploy_runs_to_success_as_one_message(bot: BotProcess, slack: SlackWorkspace,
                                                   background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee dev")
    wait_for_card(slack, "C0DEV", "Succeeded")
    # the Deploy stage's own event may be applied after the execution's (EventBridge does not order them, and
    # the bot's pollers take them side by side): it failed here once, on a loaded machine, a moment before it
    card = wait_for_card(slack, "C0DEV", ":white_check_mark: Deploy")
    # the pipeline was started with the variables the buildspec needs to find this card
    [execution] = pipeline.executions.values()
    assert execution.variables["SERVICE"] == "employee" and execution.variables["ENVIRONMENT"] == "dev"
    assert execution.variables["REQUESTED_BY"] == "U0DEV1"
    assert (execution.variables["SLACK_CHANNEL"], execution.variables["SLACK_THREAD_TS"]) == ("C0DEV", card.ts)
    shown = card_text(card)
    for stage in ("Source", "Build", "Deploy"):
        assert f":white_check_mark: {stage}" in shown
    assert ":next_track_button: Approval skipped" in shown  # dev needs none: the condition skips it
    assert execution.revision[:7] in shown and "<@U0DEV1>" in shown
    assert "1 image" in shown or "0 critical" in shown
    # one channel message for the whole deploy; details in its thread
    wait_until(lambda: slack.thread("C0DEV", card.ts), what="the scan note in the thread")
    assert len(slack.channel_messages("C0DEV")) == 1
    thread = " ".join(m.text for m in slack.thread("C0DEV", card.ts))
    assert "Scan of `erp/employee-service" in thread and "passes the gate" in thread.lower()
    # the requester got a link to the card
    assert any("Deploying employee to dev" in m.text for m in slack.ephemerals("U0DEV1"))
    # the card is only edited when its content changed
    updates = slack.calls_to("chat.update")
    assert len(updates) == len({json.dumps(c.args.get("blocks"), sort_keys=True) for c in updates})


def test_prod_deploy_waits_for_an_approver_and_records_who(bot: BotProcess, slack: SlackWorkspace,
                                                           background_loop: BackgroundLoop,
                                                           pipeline: PipelineStandIn):
    command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    assert buttons(card)[:2] == [APPROVE_ACTION, REJECT_ACTION]
    assert "<!date^" in card_text(card) and "expires" in card_text(card)
    wait_until(lambda: any("Approval needed" in m.text for m in slack.thread("C0PROD", card.ts)),
               what="the approvers to be mentioned in the thread")
    note = next(m.text for m in slack.thread("C0PROD", card.ts) if "Approval needed" in m.text)
    assert "<@U0APPR1>" in note and "<!subteam^S0ONCALL>" in note
    # the requester cannot approve their own deploy; a developer is not an approver
    background_loop.run(slack.click("U0DEV1", card, APPROVE_ACTION))
    wait_until(lambda: slack.ephemerals("U0DEV1") and "someone else must approve" in slack.ephemerals("U0DEV1")[-1].text,
               what="the self-approval refusal")
    assert "Waiting for approval" in card_text(the_card(slack, "C0PROD"))

    background_loop.run(slack.click("U0APPR1", card, APPROVE_ACTION))
    wait_for_card(slack, "C0PROD", "Succeeded")
    # events arrive in any order: the Deploy stage's own event may land just after the pipeline's
    card = wait_for_card(slack, "C0PROD", ":white_check_mark: Deploy")
    shown = card_text(card)
    assert "Succeeded" in shown and "Approved by" in shown and "<@U0APPR1>" in shown
    assert APPROVE_ACTION not in buttons(card) and REJECT_ACTION not in buttons(card)
    for stage in ("Source", "Build", "Approval", "Deploy"):
        assert f":white_check_mark: {stage}" in shown
    [execution] = pipeline.executions.values()
    approval = execution.actions[("Approval", "Approval")]
    assert approval.status == "Succeeded" and "Approved in Slack by Ari Approver (U0APPR1)" in (approval.summary or "")
    assert len(slack.channel_messages("C0PROD")) == 1

    command(background_loop, slack, "U0DEV1", "C0DEV", "history employee prod")
    history = wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1") if "Recent activity" in m.text],
                         what="the history")[-1]
    assert "<@U0APPR1> approved employee in prod" in history
    assert "<@U0DEV1> tried to approve employee in prod: refused (You asked for this deploy" in history
    assert "<@U0DEV1> started a deploy of employee to prod" in history


def test_reject_asks_for_a_reason_that_reaches_the_card(bot: BotProcess, slack: SlackWorkspace,
                                                         background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy notification prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    background_loop.run(slack.click("U0ONCALL", card, REJECT_ACTION))
    view_id = wait_until(lambda: next((v for v, view in slack.views.items() if "reason" in json.dumps(view)), None),
                         what="the reason modal")
    status, reply = background_loop.run(slack.submit_view("U0ONCALL", view_id, {"reason": {"reason": " "}}))
    assert status == 200 and json.loads(reply)["errors"]["reason"].startswith("Say why")
    # what the approver types is shown as typed: no channel ping, no mention, no link behind a label
    hostile = "Kafka lag alarm is firing <!channel> <@U0DEV1> <https://evil.example|the runbook> & wait"
    background_loop.run(slack.submit_view("U0ONCALL", view_id, {"reason": {"reason": hostile}}))
    card = wait_for_card(slack, "C0PROD", "Rejected")
    shown = card_text(card)
    assert "Kafka lag alarm is firing" in shown and "<@U0ONCALL>" in shown
    escaped = "&lt;!channel&gt; &lt;@U0DEV1&gt; &lt;https://evil.example|the runbook&gt; &amp; wait"
    assert escaped in shown and "<!channel>" not in shown and "<https://evil" not in shown
    command(background_loop, slack, "U0DEV1", "C0DEV", "history notification prod")
    history = wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1") if "Recent activity" in m.text],
                         what="the history")[-1]
    assert escaped[:60] in history and "<!channel>" not in history
    wait_until(lambda: next(iter(pipeline.executions.values())).status == "Failed", what="the pipeline to stop")
    assert ":white_check_mark: Deploy" not in card_text(the_card(slack, "C0PROD"))


def test_two_approvers_at_once_one_wins(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop,
                                        pipeline: PipelineStandIn):
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    results: list[int] = []

    def press(user: str) -> None:
        results.append(background_loop.run(slack.click(user, card, APPROVE_ACTION))[0])

    threads = [threading.Thread(target=press, args=(u,)) for u in ("U0APPR1", "U0ONCALL")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200]
    wait_for_card(slack, "C0PROD", "Succeeded")
    told = wait_until(lambda: [m.text for u in ("U0APPR1", "U0ONCALL") for m in slack.ephemerals(u)],
                      what="the loser to be told")
    assert len(told) == 1 and ("already decided" in told[0] or "is recording a decision on" in told[0])
    [execution] = pipeline.executions.values()
    assert execution.actions[("Approval", "Approval")].status == "Succeeded"


def test_two_prod_deploys_waiting_at_once_are_each_approved_from_their_own_card(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    """The pipeline runs in PARALLEL mode: each execution's approval has its own token, which only
    ListActionExecutions gives (GetPipelineState shows none), whichever execution entered the stage last."""
    def waiting_cards() -> list[Message] | None:
        cards = [m for m in slack.channel_messages("C0PROD") if "Waiting for approval" in card_text(m)]
        return cards if len(cards) == 2 else None

    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    wait_for_card(slack, "C0PROD", "Waiting for approval")
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy notification prod")
    cards = wait_until(waiting_cards, what="two cards waiting for approval")
    by_service = {("employee" if "employee" in card_text(c) else "notification"): c for c in cards}
    # the older execution first: the newer one is the stage's latest, which the older's token is not
    background_loop.run(slack.click("U0APPR1", by_service["employee"], APPROVE_ACTION))
    wait_until(lambda: "Succeeded" in card_text(slack.find("C0PROD", by_service["employee"].ts)),
               what="the employee deploy to succeed")
    background_loop.run(slack.click("U0ONCALL", by_service["notification"], APPROVE_ACTION))
    wait_until(lambda: "Succeeded" in card_text(slack.find("C0PROD", by_service["notification"].ts)),
               what="the notification deploy to succeed")
    summaries = {e.variables["SERVICE"]: e.actions[("Approval", "Approval")].summary or ""
                 for e in pipeline.executions.values()}
    assert "(U0APPR1)" in summaries["employee"] and "(U0ONCALL)" in summaries["notification"]
    assert not [m for u in ("U0APPR1", "U0ONCALL") for m in slack.ephemerals(u) if "no longer open" in m.text]


def test_an_approval_nobody_answers_expires_after_seven_days(bot: BotProcess, slack: SlackWorkspace,
                                                             background_loop: BackgroundLoop,
                                                             pipeline: PipelineStandIn):
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    pipeline.advance(7 * 86400 + 5)
    card = wait_for_card(slack, "C0PROD", "Expired")
    shown = card_text(card)
    assert "Rejected" not in shown and "the console" not in shown
    assert APPROVE_ACTION not in buttons(card) and REJECT_ACTION not in buttons(card)
    assert ROLLBACK_ACTION not in buttons(card)  # nothing was deployed
    note = wait_until(lambda: [m.text for m in slack.thread("C0PROD", card.ts) if "expired" in m.text.lower()],
                      what="the expiry in the thread")[0]
    assert "7 days" in note and "/erp deploy employee prod" in note
    command(background_loop, slack, "U0DEV1", "C0PROD", "history employee prod")
    history = wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1") if "Recent activity" in m.text],
                         what="the history")[-1]
    assert "approval of employee in prod expired" in history


def test_build_failure_shows_where_and_why_and_offers_no_rollback(bot: BotProcess, slack: SlackWorkspace,
                                                               background_loop: BackgroundLoop,
                                                               pipeline: PipelineStandIn):
    pipeline.faults.fail_build.add("approval-processing")
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy approval-processing prod")
    wait_for_card(slack, "C0PROD", "Failed")
    card = wait_for_card(slack, "C0PROD", ":x: Build")  # events arrive in any order: the stage's may be last
    shown = card_text(card)
    assert ":x: Build" in shown and "Reason: exit status 1" in shown and "Build terminated with state" not in shown
    # nothing reached the cluster: there is nothing to roll back, and no button says otherwise
    assert ROLLBACK_ACTION not in buttons(card) and APPROVE_ACTION not in buttons(card)
    # the failure note, with CodeBuild's phase context in it, or (when the note went out before the phase
    # change arrived) right after it in a note of its own
    note = wait_until(lambda: " ".join(m.text for m in slack.thread("C0PROD", card.ts)
                                       if "Build failed" in m.text or "failed in BUILD" in m.text)
                      if "COMMAND_EXECUTION_ERROR" in " ".join(m.text for m in slack.thread("C0PROD", card.ts))
                      else None, what="the failure note with its context")
    # CodeBuild quotes the buildspec's block; the note keeps its first command and the reason, not the block
    assert "COMMAND_EXECUTION_ERROR" in note and "Reason: exit status 1" in note and "set -eo pipefail" not in note
    assert "more lines of the block" in note and "logEvent:group=/aws/codebuild/erp-build" in note


def test_deploy_while_approval_pending_points_to_the_card(bot: BotProcess, slack: SlackWorkspace,
                                                         background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    wait_for_card(slack, "C0PROD", "Waiting for approval")
    command(background_loop, slack, "U0APPR1", "C0PROD", "deploy employee prod")
    answer = wait_until(lambda: slack.ephemerals("U0APPR1"), what="an answer")[-1].text
    assert "already waiting for approval: <http" in answer and "|the deploy card> in <#C0PROD>" in answer
    assert len(pipeline.executions) == 1


def test_a_card_shown_waiting_for_approval_already_refuses_a_second_deploy(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop, pipeline: PipelineStandIn,
        tmp_path: Path):
    """CI found it under load: the card showed "Waiting for approval" before the bot had recorded the approval
    as pending (that came after reading the approval's token from CodePipeline), so a second deploy in between
    went through. Here CodePipeline answers ListActionExecutions slowly: the record must come first."""
    from sandbox.aws_fault_proxy import AwsFaultProxy
    from sandbox.aws_fault_proxy import Fault as AwsFault
    from tests.support import served

    with served(background_loop, AwsFaultProxy(upstream=pipeline.url)) as slow:
        slow.faults.append(AwsFault("codepipeline", "slow", times=10**6, operation="ListActionExecutions", delay=4))
        process = BotProcess({**bot_env, "AWS_ENDPOINT_URL_CODEPIPELINE": slow.url}, tmp_path / "bot.log")
        slack.bot_url = f"{process.url}/slack/events"
        try:
            command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
            wait_for_card(slack, "C0PROD", "Waiting for approval", timeout=30)
            command(background_loop, slack, "U0APPR1", "C0PROD", "deploy employee prod")
            answer = wait_until(lambda: slack.ephemerals("U0APPR1"), what="an answer")[-1].text
            assert "already waiting for approval" in answer and len(pipeline.executions) == 1
        finally:
            process.stop_soon()


def test_double_submitted_command_starts_one_execution(bot: BotProcess, slack: SlackWorkspace,
                                                       background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    threads = [threading.Thread(target=command, args=(background_loop, slack, "U0DEV1", "C0DEV",
                                                      "deploy notification dev")) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for_card(slack, "C0DEV", "Succeeded")
    assert len(pipeline.executions) == 1
    assert len(slack.channel_messages("C0DEV")) == 1


def test_refused_deployer_changes_nothing(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop,
                                          pipeline: PipelineStandIn):
    command(background_loop, slack, "U0ONCALL", "C0PROD", "deploy employee prod")
    answer = wait_until(lambda: slack.ephemerals("U0ONCALL"), what="the refusal")[-1].text
    assert "You can't deploy to prod: only <@U0DEV1> or <!subteam^S0APPROVERS> can." in answer
    assert pipeline.executions == {} and slack.channel_messages("C0PROD") == []


def test_missing_pipeline_leaves_no_half_made_card(bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path,
                                                    aws_resources: dict[str, str], background_loop: BackgroundLoop,
                                                    pipeline: PipelineStandIn):
    config = base_config(aws_resources["queue_url"], aws_resources["table"])
    config["pipeline"] = "erp-pipline"
    process = BotProcess({**bot_env, "BOT_CONFIG": str(write_config(tmp_path / "c.yaml", config))},
                         tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    try:
        command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee dev")
        answer = wait_until(lambda: slack.ephemerals("U0DEV1"), what="the answer")[-1].text
        assert "The pipeline `erp-pipline` does not exist here" in answer and "Nothing was started" in answer
        assert slack.calls_to("chat.delete") and slack.channel_messages("C0DEV") == []
    finally:
        process.stop_soon()


def test_a_push_gets_a_card_in_the_dev_channel(bot: BotProcess, slack: SlackWorkspace,
                                              background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    async def push() -> None:
        pipeline.start_from_push("dev")
    background_loop.run(push())
    card = wait_for_card(slack, "C0DEV", "Succeeded")
    shown = card_text(card)
    assert "a push to main" in shown and "changed services" in shown
    assert len(slack.channel_messages("C0DEV")) == 1


def test_duplicate_and_poison_messages(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop,
                                       pipeline: PipelineStandIn, aws_resources: dict[str, str]):
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=aws_resources["queue_url"], MessageBody="this is not an event")
    sqs.send_message(QueueUrl=aws_resources["queue_url"], MessageBody=json.dumps({"id": "x", "detail-type": "CodePipeline Stage Execution State Change", "detail": {"state": 1}, "time": "2026-01-01T00:00:00Z"}))
    command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee dev")
    card = wait_for_card(slack, "C0DEV", "Succeeded")
    wait_until(lambda: slack.thread("C0DEV", card.ts), what="the scan note")
    calls_before, thread_before = len(slack.calls), len(slack.thread("C0DEV", card.ts))
    # EventBridge delivers at least once: send every event of the execution again, shuffled
    for event in reversed(pipeline.emitted):
        sqs.send_message(QueueUrl=aws_resources["queue_url"], MessageBody=json.dumps(event))
    time.sleep(3)
    assert len(slack.thread("C0DEV", card.ts)) == thread_before
    assert [c.method for c in slack.calls[calls_before:]] == []
    # the poison messages end in the dead-letter queue, each logged with its reason
    def dead() -> list[str]:
        resp = sqs.receive_message(QueueUrl=aws_resources["dlq_url"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        dead_letters.extend(m["Body"] for m in resp.get("Messages", []))
        return dead_letters if len(dead_letters) >= 2 else []
    dead_letters: list[str] = []
    wait_until(dead, timeout=30, what="both poison messages in the DLQ")
    assert "this is not an event" in dead_letters
    reasons = [line.get("reason") for line in bot.log_lines() if line.get("reason")]
    assert "the message body is not JSON" in reasons and "`detail.state` is missing" in reasons
    assert "the message body is not JSON" not in [m.text for m in slack.messages]


def test_two_replicas_make_one_card_per_execution(bot: BotProcess, bot_env: dict[str, str], slack: SlackWorkspace,
                                                  background_loop: BackgroundLoop, pipeline: PipelineStandIn,
                                                  tmp_path: Path):
    second = BotProcess(bot_env, tmp_path / "replica2.log")
    try:
        async def pushes() -> None:
            for _ in range(3):
                pipeline.start_from_push("dev")
        background_loop.run(pushes())
        command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee dev")
        wait_until(lambda: len([m for m in slack.channel_messages("C0DEV") if "Succeeded" in card_text(m)]) == 4,
                   timeout=40, what="four finished cards")
        assert len(slack.channel_messages("C0DEV")) == 4
        for replica in (bot, second):  # both competed for the queue's events
            metrics = http("GET", replica.metrics_url)[1]
            handled = [line for line in metrics.splitlines() if line.startswith("erp_chatops_events_processed_total")]
            assert sum(float(line.rsplit(" ", 1)[1]) for line in handled) > 0
    finally:
        second.stop_soon()


def test_a_card_posted_by_a_replica_that_died_is_adopted_not_posted_twice(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, pipeline: PipelineStandIn,
        aws_resources: dict[str, str]):
    pipeline.deliver = False  # the events wait until the dead replica's leftovers are in place

    async def push() -> Execution:
        execution = pipeline.start_from_push("dev")
        assert execution.task is not None
        await execution.task
        return execution
    execution = background_loop.run(push())
    # what a replica leaves behind when it is killed right after posting the card, before noting where
    leftover = DeployCard(execution_id=execution.id, pipeline=pipeline.name, environment="dev", service="changed",
                          channel="C0DEV", trigger="push",
                          posting_since=(datetime.now(UTC) - timedelta(seconds=20)).isoformat(timespec="seconds"))
    boto3.client("dynamodb").put_item(TableName=aws_resources["table"], Item={
        "pk": {"S": f"EXEC#{execution.id}"}, "sk": {"S": "CARD"}, "execution_id": {"S": execution.id},
        "version": {"N": "1"}, "channel": {"S": "C0DEV"}, "body": {"S": leftover.to_json()}})
    WebClient(token=BOT_TOKEN, base_url=f"{slack.base_url}/api/").chat_postMessage(
        channel="C0DEV", text=render_card(leftover)[0], blocks=render_card(leftover)[1],
        metadata={"event_type": "erp_deploy_card", "event_payload": {"execution_id": execution.id}})
    sqs = boto3.client("sqs")
    for event in execution.events:
        sqs.send_message(QueueUrl=aws_resources["queue_url"], MessageBody=json.dumps(event))
    wait_until(lambda: "Succeeded" in json.dumps([m.blocks for m in slack.channel_messages("C0DEV")]), timeout=60,
               what="the adopted card to end Succeeded")
    assert len(slack.channel_messages("C0DEV")) == 1
    assert any("found the card a replica posted" in line.get("message", "") for line in bot.log_lines())


def test_wrong_users_are_refused_and_every_refusal_is_audited(bot: BotProcess, slack: SlackWorkspace,
                                                              background_loop: BackgroundLoop,
                                                              pipeline: PipelineStandIn):
    command(background_loop, slack, "U0ONCALL", "C0PROD", "deploy employee prod")  # on-call may not deploy prod
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    background_loop.run(slack.click("U0DEV1", card, APPROVE_ACTION))  # the requester, approving
    background_loop.run(slack.click("U0DEV1", card, REJECT_ACTION))  # and rejecting
    wait_until(lambda: [m for m in slack.ephemerals("U0DEV1") if "You asked for this deploy" in m.text],
               what="the approve refusal")
    # Reject opened its modal at once (the trigger lives 3 s); the refusal then took the form's place
    refusal = wait_until(lambda: [v for v in slack.views.values() if "You asked for this deploy" in json.dumps(v)],
                         what="the reject refusal in the modal")[0]
    assert "submit" not in refusal and not any(b["type"] == "input" for b in refusal["blocks"])
    [execution] = pipeline.executions.values()
    assert execution.status == "InProgress" and "Waiting for approval" in card_text(the_card(slack, "C0PROD"))
    command(background_loop, slack, "U0APPR1", "C0PROD", "history employee prod")
    history = wait_until(lambda: [m.text for m in slack.ephemerals("U0APPR1") if "Recent activity" in m.text],
                         what="the history")[-1]
    for line in ("<@U0ONCALL> tried to deploy employee to prod: refused",
                 "<@U0DEV1> tried to approve employee in prod: refused",
                 "<@U0DEV1> tried to reject employee in prod: refused"):
        assert line in history


def test_a_deploy_where_the_bot_was_not_invited_says_so_and_works_right_after_the_invite(
        bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path, background_loop: BackgroundLoop,
        pipeline: PipelineStandIn, aws_resources: dict[str, str]):
    slack.remove_bot("C0PROD")  # a fresh install: nobody has invited the bot to #erp-prod yet
    process = BotProcess(bot_env, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    try:
        # the start-up log and /metrics name the channel; /readyz stays ready (an invite is for a person)
        wait_until(lambda: any("#erp-prod" in str(line.get("message", "")) and "invite" in str(line.get("message"))
                               for line in process.log_lines()), what="the start-up warning")
        _, metrics, _ = http("GET", process.metrics_url)
        assert 'erp_chatops_slack_channel_member{channel_id="C0PROD",environment="prod"} 0.0' in metrics
        assert 'erp_chatops_slack_channel_member{channel_id="C0DEV",environment="dev"} 1.0' in metrics
        assert http("GET", f"{process.url}/readyz")[0] == 200

        command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee prod")
        answer = wait_until(lambda: slack.ephemerals("U0DEV1"), what="the answer")[-1].text
        assert "Nothing was started" in answer and "invite me" in answer and "#erp-prod" in answer
        assert "\n" not in answer and len(slack.ephemerals("U0DEV1")) == 1
        assert pipeline.executions == {} and slack.channel_messages("C0PROD") == []

        slack.invite_bot("C0PROD")  # the same command works at once: no marker was left behind
        command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee prod")
        wait_for_card(slack, "C0PROD", "Waiting for approval")
        assert len(pipeline.executions) == 1
    finally:
        process.stop_soon()


def test_a_push_card_the_bot_cannot_post_waits_for_the_invite_and_is_not_dead_lettered(
        bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path, background_loop: BackgroundLoop,
        pipeline: PipelineStandIn, aws_resources: dict[str, str]):
    slack.remove_bot("C0DEV")
    bot = BotProcess({**bot_env, "SWEEP_SECONDS": "1"}, tmp_path / "bot.log")
    slack.bot_url = f"{bot.url}/slack/events"
    try:
        async def push() -> Execution:
            return pipeline.start_from_push("dev")
        execution = background_loop.run(push())
        wait_until(lambda: execution.status == "Succeeded", what="the execution to finish")
        wait_until(lambda: any("could not post the card" in str(line.get("message", "")) and "invite me" in
                               str(line.get("message", "")) for line in bot.log_lines()), what="the warning")
        time.sleep(2)  # every event of the execution handled
        sqs = boto3.client("sqs")
        dead = sqs.receive_message(QueueUrl=aws_resources["dlq_url"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        assert dead.get("Messages", []) == [] and slack.channel_messages("C0DEV") == []
        _, metrics, _ = http("GET", bot.metrics_url)
        assert 'erp_chatops_slack_channel_member{channel_id="C0DEV",environment="dev"} 0.0' in metrics
        # the invite: the execution sends no more events, yet its card appears, in its final state
        slack.invite_bot("C0DEV")
        card = wait_for_card(slack, "C0DEV", "Succeeded", timeout=30)
        wait_until(lambda: slack.thread("C0DEV", card.ts), what="its thread notes")
        assert len(slack.channel_messages("C0DEV")) == 1
    finally:
        bot.stop()


def test_the_bot_keeps_one_http_session_for_slack(bot: BotProcess, slack: SlackWorkspace,
                                                 background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee dev")
    wait_for_card(slack, "C0DEV", "Succeeded")
    calls = [c for c in slack.calls if c.connection is not None]
    connections = {c.connection for c in calls}
    # kept-alive connections are reused: a handful for the whole deploy, not one per call
    assert len(calls) >= 8 and len(connections) <= len(calls) // 3, (len(calls), len(connections))


def test_an_approval_never_sticks_in_recording_the_decision(bot: BotProcess, slack: SlackWorkspace,
                                                            background_loop: BackgroundLoop,
                                                            pipeline: PipelineStandIn, aws_resources: dict[str, str]):
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    [execution] = pipeline.executions.values()
    # a replica claimed the decision and died before telling CodePipeline: its claim's lease has run out
    cards = CardStore(StateStore(AwsClients(), aws_resources["table"]), slack=None)  # type: ignore[arg-type]

    def dead_claim(c: DeployCard) -> None:
        c.approval.decision, c.approval.decided_by = "Approving", "U0ONCALL"
        c.approval.claimed_until = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="seconds")
    background_loop.run(cards.mutate(execution.id, dead_claim))
    # and Slack refuses the next edit (the one showing "Recording..."): neither stops Ari's decision
    slack.faults.append(Fault("chat.update", error="fatal_error", times=1))
    background_loop.run(slack.click("U0APPR1", card, APPROVE_ACTION))
    wait_for_card(slack, "C0PROD", "Succeeded")
    assert execution.actions[("Approval", "Approval")].status == "Succeeded"
    assert "<@U0APPR1>" in card_text(the_card(slack, "C0PROD"))


def test_a_rewritten_card_cannot_make_a_requester_their_own_approver(bot: BotProcess, slack: SlackWorkspace,
                                                                     background_loop: BackgroundLoop,
                                                                     pipeline: PipelineStandIn,
                                                                     aws_resources: dict[str, str]):
    """Issue 18 item 3: who asked was read from the stored card; rewritten, a requester approved their own."""
    command(background_loop, slack, "U0APPR1", "C0PROD", "deploy employee prod")  # Ari may deploy and approve
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    [execution] = pipeline.executions.values()
    cards = CardStore(StateStore(AwsClients(), aws_resources["table"]), slack=None)  # type: ignore[arg-type]

    def planted(c: DeployCard) -> None:  # someone with write access to the table names another requester
        c.requested_by = "U0DEV1"
    background_loop.run(cards.mutate(execution.id, planted))
    background_loop.run(slack.click("U0APPR1", card, APPROVE_ACTION))
    wait_until(lambda: [m for m in slack.ephemerals("U0APPR1") if "does not match its pipeline execution" in m.text],
               what="the refusal")
    assert execution.actions[("Approval", "Approval")].status == "InProgress"
    command(background_loop, slack, "U0ONCALL", "C0PROD", "history employee prod")
    history = wait_until(lambda: [m.text for m in slack.ephemerals("U0ONCALL") if "Recent activity" in m.text],
                         what="the history")[-1]
    assert "<@U0APPR1> tried to approve employee in prod: refused (the stored card does not match" in history


def test_history_exports_a_period_as_csv_where_its_environment_lives(bot: BotProcess, slack: SlackWorkspace,
                                                                      background_loop: BackgroundLoop,
                                                                      aws_resources: dict[str, str]):
    """Issue 18 item 6: `/erp history <env> <since> csv` gives the audit trail of a period as a file; a record
    not sealed by the bot is marked, and no cell can run as a spreadsheet formula."""
    import csv
    import io

    import boto3

    from sandbox.seed import audit_table_of

    command(background_loop, slack, "U0GUEST", "C0GENERAL", "deploy employee prod")  # refused, and audited
    wait_until(lambda: [m for m in slack.ephemerals("U0GUEST") if "can't deploy" in m.text], what="the refusal")
    boto3.client("dynamodb").put_item(TableName=audit_table_of(aws_resources["table"]), Item={
        "pk": {"S": "AUDIT#prod"}, "sk": {"S": "2026-12-01T23:00:00+00:00#planted"}, "actor": {"S": "U0APPR1"},
        "action": {"S": "approve"}, "environment": {"S": "prod"}, "outcome": {"S": "ok"},
        "detail": {"S": "=HYPERLINK(\"https://evil.example\",\"ok\")"}, "at": {"S": "2026-12-01T23:00:00+00:00"}})
    command(background_loop, slack, "U0DEV1", "C0DEV", "history prod 30d csv")  # not prod's channel
    assert wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1") if "shared only in" in m.text],
                      what="the pointer")
    command(background_loop, slack, "U0ONCALL", "C0ONCALL", "history prod 30d csv")
    answer = wait_until(lambda: [m.text for m in slack.ephemerals("U0ONCALL") if "records of prod" in m.text],
                        what="the export")[-1]
    assert "1 of them do not carry my seal" in answer
    [upload] = [m for m in slack.channel_messages("C0ONCALL") if m.files]
    rows = list(csv.DictReader(io.StringIO(slack.files[upload.files[0]["id"]]["content"].decode())))
    refused = [r for r in rows if r["actor"] == "U0GUEST"]
    assert refused and refused[0]["outcome"] == "refused" and refused[0]["altered"] == "False"
    [planted] = [r for r in rows if r["action"] == "approve"]
    assert planted["altered"] == "True" and planted["detail"].startswith("'=HYPERLINK")


def test_the_builds_progress_reaches_the_thread_through_the_bot(bot: BotProcess, slack: SlackWorkspace,
                                                                  background_loop: BackgroundLoop,
                                                                  pipeline: PipelineStandIn,
                                                                  aws_resources: dict[str, str]):
    """Issue 18 item 2: the buildspec's `erp-chatops notify` hands its lines to the bot's queue (CI holds no
    Slack credential); the bot posts them in the deploy's thread, as text."""
    from bot.ci.notify import Notifier

    pipeline.notify_environ = {"PROGRESS_QUEUE_URL": aws_resources["progress_queue_url"]}  # as CodeBuild has it
    command(background_loop, slack, "U0DEV1", "C0DEV", "deploy employee dev")
    card = wait_for_card(slack, "C0DEV", "Succeeded")
    [execution] = pipeline.executions.values()
    assert Notifier({"PROGRESS_QUEUE_URL": aws_resources["progress_queue_url"],
                     "PIPELINE_EXECUTION_ID": execution.id}).post(
        "step said <!channel> see <https://evil.example|the log>")

    def lines() -> list[str]:
        return [m.text for m in slack.thread("C0DEV", card.ts)]
    wait_until(lambda: any("Build started for dev" in t for t in lines())
               and any("&lt;!channel&gt;" in t for t in lines()), timeout=30, what="the progress lines")
    assert not [t for t in lines() if "<!channel>" in t or "<https://evil" in t]
    assert len([t for t in lines() if "Build started for dev" in t]) == 1  # each line once


def test_an_approval_token_planted_on_a_card_is_never_used(bot: BotProcess, slack: SlackWorkspace,
                                                           background_loop: BackgroundLoop, pipeline: PipelineStandIn,
                                                           aws_resources: dict[str, str]):
    """Issue 18 item 3: the token came from the stored card; in PARALLEL mode a token is one execution's, so a
    token copied into another card would decide that other execution. It is always read from CodePipeline."""
    command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
    card = wait_for_card(slack, "C0PROD", "Waiting for approval")
    [execution] = pipeline.executions.values()
    cards = CardStore(StateStore(AwsClients(), aws_resources["table"]), slack=None)  # type: ignore[arg-type]

    def planted(c: DeployCard) -> None:
        c.approval.token = "token-of-another-execution"
    background_loop.run(cards.mutate(execution.id, planted))
    background_loop.run(slack.click("U0APPR1", card, APPROVE_ACTION))
    wait_for_card(slack, "C0PROD", "Succeeded", timeout=30)
    assert execution.actions[("Approval", "Approval")].status == "Succeeded"
