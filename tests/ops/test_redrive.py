"""`erp-chatops redrive`: after an outage longer than the consumer's backoff, the dead-lettered events go
back and the cards catch up; run as an operator runs it, against moto's SQS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import boto3

from sandbox.codepipeline import Execution, PipelineStandIn
from sandbox.slack_workspace import SlackWorkspace
from tests.support import ROOT, BackgroundLoop, BotProcess, wait_until


def test_redrive_brings_dead_lettered_events_back_and_the_card_catches_up(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop,
        pipeline: PipelineStandIn, aws_resources: dict[str, str], tmp_path):  # type: ignore[no-untyped-def]
    sqs = boto3.client("sqs")

    async def push() -> Execution:
        return pipeline.start_from_push("dev")
    execution = background_loop.run(push())  # no bot is running: the events wait in the queue
    wait_until(lambda: execution.status == "Succeeded", what="the execution to finish")
    # the outage outlasted the backoff: every event of the execution ended in the dead-letter queue
    moved = 0
    while batch := sqs.receive_message(QueueUrl=aws_resources["queue_url"], MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", []):
        for m in batch:
            sqs.send_message(QueueUrl=aws_resources["dlq_url"], MessageBody=m["Body"])
            sqs.delete_message(QueueUrl=aws_resources["queue_url"], ReceiptHandle=m["ReceiptHandle"])
            moved += 1
    sqs.send_message(QueueUrl=aws_resources["dlq_url"], MessageBody="not an event")  # and one poison
    assert moved >= 10

    bot = BotProcess(bot_env, tmp_path / "bot.log")
    slack.bot_url = f"{bot.url}/slack/events"
    try:
        time.sleep(2)
        assert slack.channel_messages("C0DEV") == []  # Slack and DynamoDB are back, but nothing comes
        done = subprocess.run([sys.executable, "-m", "bot", "redrive"], env={**os.environ, **bot_env}, cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert f"moved {moved + 1} message(s)" in done.stdout
        card = wait_until(lambda: [m for m in slack.channel_messages("C0DEV") if "Succeeded" in json.dumps(m.blocks)],
                          timeout=60, what="the card, caught up")
        assert len(card) == 1 and len(slack.channel_messages("C0DEV")) == 1
        # the poison comes back to the dead-letter queue on its own, logged with its reason
        wait_until(lambda: any(line.get("reason") == "the message body is not JSON" for line in bot.log_lines()),
                   timeout=60, what="the poison's reason in the log")
    finally:
        bot.stop()
