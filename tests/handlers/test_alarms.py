"""A service's error alarm where its deploy is: moto's CloudWatch holds the alarm, its state change reaches the
real bot process as EventBridge delivers it (AWS's documented shape, sandbox/alarms.py), signed clicks, the
local Slack Web API."""

from __future__ import annotations

import json
import time
import uuid

import boto3

from bot.aws.clients import AwsClients
from handlers.alarms import LOCK_ACTION, LOGS_ACTION
from sandbox.alarms import set_alarm
from sandbox.codepipeline import PipelineStandIn
from sandbox.slack_workspace import Message, SlackWorkspace
from tests.handlers.test_deploy import ROLLBACK_ACTION, wait_for_card
from tests.handlers.test_locks import answer, gated  # noqa: F401 - the fixture: the stand-in as CodeBuild has it
from tests.handlers.test_promote import deploy_to_dev
from tests.support import BackgroundLoop, BotProcess, wait_until


def alarm_messages(slack: SlackWorkspace, channel: str, name: str) -> list[Message]:
    return [m for m in slack.messages if m.channel == channel and f":rotating_light: *{name}*" in m.text
            and not m.ephemeral_for]


def buttons(message: Message) -> list[str]:
    return [el["action_id"] for b in message.blocks if b["type"] == "actions" for el in b["elements"]]


def test_an_alarm_after_a_deploy_lands_in_its_thread_once_with_logs_rollback_and_lock(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn,  # noqa: F811
        aws_resources: dict[str, str], erp_images: None):
    deploy_to_dev(background_loop, slack, gated, "employee")
    card = wait_for_card(slack, "C0DEV", "Succeeded")
    queue, name = aws_resources["queue_url"], "erp-dev-employee-errors"
    set_alarm(AwsClients(), queue, "dev", "employee", firing=True, errors=12)
    [message] = wait_until(lambda: alarm_messages(slack, "C0DEV", name), 20, "the alarm in the deploy's thread")
    assert message.thread_ts == card.ts and message.broadcast  # in the thread, and shown in the channel
    assert "went to ALARM 0m after the deploy of employee" in message.text
    assert "12 errors a minute (threshold 5)" in message.text
    assert buttons(message) == [LOGS_ACTION, ROLLBACK_ACTION, LOCK_ACTION]
    [rollback] = [el for b in message.blocks if b["type"] == "actions" for el in b["elements"]
                  if el["action_id"] == ROLLBACK_ACTION]
    assert rollback["value"].startswith("employee dev ") and rollback["value"].split()[2] in gated.executions

    background_loop.run(slack.click("U0DEV1", message, LOCK_ACTION))
    lock = answer(slack, "U0DEV1", "dev is locked by <@U0DEV1>")
    assert "erp-dev-employee-errors in ALARM" in lock.text
    background_loop.run(slack.click("U0DEV1", message, LOGS_ACTION))
    wait_until(lambda: [m for m in slack.ephemerals("U0DEV1") if "employee" in m.text and m is not lock], 20,
               "the logs of the last 30 minutes")

    # back to OK: the same message says so; flapping edits it, never a second message
    set_alarm(AwsClients(), queue, "dev", "employee", firing=False)
    wait_until(lambda: "resolved after" in message.text, 20, "the message to say resolved")
    again = set_alarm(AwsClients(), queue, "dev", "employee", firing=True)
    wait_until(lambda: "in ALARM again (2 times" in message.text, 20, "the message to say it fires again")
    # an OK from before that ALARM, delivered late (SQS keeps no order), changes nothing
    late = {**again, "id": str(uuid.uuid4()), "time": "2026-01-01T00:00:00Z",
            "detail": {**again["detail"], "state": {**again["detail"]["state"], "value": "OK"}}}
    boto3.client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps(late))
    time.sleep(3)
    assert "in ALARM again (2 times" in message.text and "resolved" not in message.text
    assert len(alarm_messages(slack, "C0DEV", name)) == 1
    assert "went to ALARM 0m after the deploy" in message.text  # the clicks answered beside it, not over it


def test_an_alarm_with_no_recent_deploy_goes_to_on_call_with_the_last_deploys(
        bot: BotProcess, slack: SlackWorkspace, aws_resources: dict[str, str]):
    set_alarm(AwsClients(), aws_resources["queue_url"], "prod", "notification", firing=True, errors=40)
    [message] = wait_until(lambda: alarm_messages(slack, "C0ONCALL", "erp-prod-notification-errors"), 20,
                           "the alarm in the on-call channel")
    assert "No deploy of notification to prod in the last 30m" in message.text
    assert "40 errors a minute" in message.text and buttons(message) == [LOGS_ACTION]
    assert not alarm_messages(slack, "C0PROD", "erp-prod-notification-errors")
