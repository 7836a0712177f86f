"""Many replicas, one queue, one table: 40 executions' events, duplicated, shuffled, a replica killed.

`make soak` runs the same test longer (SOAK_EXECUTIONS, SOAK_KILLS, SOAK_REPLICAS).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import boto3
import pytest

from sandbox.codepipeline import PipelineStandIn
from sandbox.slack_rate_limits import RateLimits
from sandbox.slack_workspace import SlackWorkspace
from tests.soak import DEPTH_POLL_SECONDS, Soak, SoakPlan
from tests.support import BackgroundLoop, BotProcess, wait_until

SOAK_RATE_SCALE = 20


@pytest.mark.slow
def test_every_execution_ends_with_one_card_in_its_true_state(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop, pipeline: PipelineStandIn,
        aws_resources: dict[str, str], erp_images: None, tmp_path: Path):
    plan = SoakPlan(executions=int(os.environ.get("SOAK_EXECUTIONS", "40")),
                    replicas=int(os.environ.get("SOAK_REPLICAS", "3")), kills=int(os.environ.get("SOAK_KILLS", "1")))
    # a held message comes back 10 s after its replica died; a poison one is retried at once, 3 times in all
    boto3.client("sqs").set_queue_attributes(QueueUrl=aws_resources["queue_url"],
                                             Attributes={"VisibilityTimeout": "10"})
    soak = Soak(plan, pipeline, slack, background_loop, aws_resources["queue_url"], aws_resources["dlq_url"],
                aws_resources["table"])
    started = time.monotonic()
    soak.run_executions()
    ran = time.monotonic() - started
    # The soak checks correctness (order, duplicates, a killed replica), with far more traffic than one
    # workspace could carry: Slack's limits stay on, raised alike for the local Slack and the bot's pacing.
    # The busy-hour benchmark measures the real limits.
    slack.rate_limits = RateLimits(scale=SOAK_RATE_SCALE)
    env = {**bot_env, "LOG_LEVEL": "INFO", "SLACK_RATE_SCALE": str(SOAK_RATE_SCALE), "SWEEP_SECONDS": "5",
           "QUEUE_POLLERS": os.environ.get("QUEUE_POLLERS", "2")}
    # fresh interpreters: replicas that race each other should not share one hash seed (tests/bot_launcher.py)
    replicas = [BotProcess(env, tmp_path / f"replica-{n}.log", start="exec") for n in range(plan.replicas)]
    try:
        replicas = soak.deliver(replicas, env, tmp_path)
        wait_until(lambda: soak.depth() == 0, timeout=60 + plan.executions * 2, what="the queue to drain",
                   every=DEPTH_POLL_SECONDS)
        drained = time.monotonic() - started - ran
        wait_until(lambda: soak.dead_depth() >= plan.poison, timeout=30, what="the poison in the dead-letter queue",
                   every=DEPTH_POLL_SECONDS)
        # the queue is empty once every effect is stored; the cards' messages follow at Slack's pace
        wait_until(lambda: soak.waiting() == 0, timeout=60 + plan.executions, what="every card published")
        print(f"\nsoak: drained in {drained:.0f} s, cards published {time.monotonic() - started - ran - drained:.0f} s"
              " later")
        dead = soak.dead_letters()
    finally:
        for replica in replicas:
            replica.stop()
    log_lines = [line for path in sorted(tmp_path.glob("replica-*.log"))
                 for line in BotProcess.read_log(path)]
    delivered = time.monotonic() - started - ran
    tally = soak.verify(dead, log_lines)
    print(f"\nsoak: {len(soak.executions)} executions, {soak.sent} messages ({soak.duplicates} duplicates,"
          f" {plan.poison} poison), {plan.replicas} replicas; {'; '.join(soak.kills)}; final cards {dict(tally)};"
          f" {ran:.0f} s to run the executions, {delivered:.0f} s to deliver and drain")
    assert len(soak.kills) == plan.kills
    assert {"dev Succeeded", "dev Failed", "prod Succeeded", "prod Failed"} <= set(tally)
