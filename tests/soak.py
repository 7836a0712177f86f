"""The soak: many pipeline executions through several bot replicas on one queue and one table.

The CodePipeline stand-in runs every execution for real but only records its
events; the soak then delivers them the way EventBridge and SQS may: some twice,
shuffled within each execution, executions overlapping, with a few unreadable
messages among them, while replicas compete for the queue and one is SIGKILLed
and restarted. `Soak.verify` then checks each execution against the truth.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bot.aws.state import WAITING_CARDS
from bot.delivery.deploy_card import DeployCard
from bot.slack.deploy_card_blocks import render_card
from sandbox.codepipeline import Execution, PipelineStandIn
from sandbox.erp_services import SERVICES
from sandbox.slack_workspace import SlackWorkspace
from tests.support import BackgroundLoop, BotProcess

CHANNELS = {"dev": "C0DEV", "prod": "C0PROD"}
# moto's SQS walks the whole queue for each depth it reports: the soak and the bench look this often, not more,
# so their looking does not take the CPU the replicas under test need (the same queue, one moto process)
DEPTH_POLL_SECONDS = 0.5
POISON = ["not json at all", json.dumps({"detail-type": "CodePipeline Pipeline Execution State Change"}),
          json.dumps({"version": "0", "id": "x", "source": "aws.codepipeline", "detail": "a string, not an object",
                      "detail-type": "CodePipeline Pipeline Execution State Change", "time": "yesterday"}),
          "{" * 300, json.dumps([1, 2, 3])]



def cards_waiting(dynamodb: Any, table: str) -> int:
    """Cards marked waiting to be published (see bot.card_publisher), counted in the state table."""
    resp = dynamodb.query(TableName=table, KeyConditionExpression="pk = :pk",
                          ExpressionAttributeValues={":pk": {"S": WAITING_CARDS}}, Select="COUNT")
    return int(resp["Count"])

@dataclass
class SoakPlan:
    executions: int = 200
    replicas: int = 3
    duplicate_share: float = 0.10
    kills: int = 1  # replicas SIGKILLed (and restarted) along the way
    overlap: int = 10  # executions whose events are in flight together
    poison: int = len(POISON)
    seed: int = 20261126
    # the mix: one service per execution, a fifth to prod (decided in the console), some builds broken
    broken_build: str = "notification"
    critical_scan: str = "approval-processing"


@dataclass
class Soak:
    plan: SoakPlan
    pipeline: PipelineStandIn
    slack: SlackWorkspace
    loop: BackgroundLoop
    queue_url: str
    dlq_url: str
    table: str
    executions: list[Execution] = field(default_factory=list)
    sent: int = 0
    duplicates: int = 0
    kills: list[str] = field(default_factory=list)
    # one client for the harness's many depth checks: making one costs tens of milliseconds of CPU
    sqs: Any = field(default_factory=lambda: boto3.client("sqs"), repr=False)

    # --- the truth: executions run by the stand-in, their events recorded ----------------

    def run_executions(self) -> None:
        rng = random.Random(self.plan.seed)
        self.pipeline.deliver, self.pipeline.step = False, 0.0
        self.pipeline.faults.fail_build = {self.plan.broken_build}
        self.pipeline.faults.critical_scan = {self.plan.critical_scan}

        async def run_all() -> list[Execution]:
            runs = []
            for i in range(self.plan.executions):
                env = "prod" if i % 5 == 4 else "dev"
                runs.append(self.pipeline.start({"SERVICE": SERVICES[i % len(SERVICES)], "ENVIRONMENT": env,
                                                 "SLACK_CHANNEL": "", "SLACK_THREAD_TS": "", "REQUESTED_BY": ""}))
            pending = {r.id: r for r in runs}
            while pending:  # prod waits for a decision: someone approves or rejects it in the console
                for r in list(pending.values()):
                    if r.decision is not None and not r.decision.done():
                        verdict = "Approved" if rng.random() < 0.7 else "Rejected"
                        r.decision.set_result((verdict, f"{verdict} in the AWS console"))
                    if r.task is not None and r.task.done():
                        del pending[r.id]
                await asyncio.sleep(0.01)
            return runs
        self.executions = self.loop.run(run_all(), timeout=600)

    def delivery(self) -> list[str]:
        """Message bodies in the order SQS will hand them out: duplicated, shuffled, overlapping."""
        rng = random.Random(self.plan.seed + 1)
        bodies: list[str] = []
        for start in range(0, len(self.executions), self.plan.overlap):
            lanes = []
            for e in self.executions[start:start + self.plan.overlap]:
                events = [json.dumps(ev) for ev in e.events]
                twice = rng.sample(events, round(len(events) * self.plan.duplicate_share))
                self.duplicates += len(twice)
                lane = events + twice
                rng.shuffle(lane)
                lanes.append(lane)
            slots = [i for i, lane in enumerate(lanes) for _ in lane]
            rng.shuffle(slots)
            bodies += [lanes[i].pop() for i in slots]
        for n, poison in enumerate(POISON[:self.plan.poison]):
            bodies.insert(rng.randrange(len(bodies)) if n else len(bodies) // 3, poison)
        return bodies

    # --- delivery through competing replicas ---------------------------------------------

    def deliver(self, replicas: list[BotProcess], env: dict[str, str], logs: Path,
                backlog: int = 200) -> list[BotProcess]:
        """Send everything in batches of ten, keeping a realistic backlog; kill replicas along the way."""
        bodies = self.delivery()
        kill_at = {len(bodies) * (k + 1) // (self.plan.kills + 1) for k in range(self.plan.kills)}
        for i in range(0, len(bodies), 10):
            while self.depth(visible_only=True) > backlog:
                time.sleep(DEPTH_POLL_SECONDS)
            entries = [{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i:i + 10])]
            resp = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            assert not resp.get("Failed"), resp["Failed"]
            self.sent += len(entries)
            if any(i <= k < i + 10 for k in kill_at):
                victim = replicas[1 + len(self.kills) % (len(replicas) - 1)]
                victim.proc.send_signal(signal.SIGKILL)  # no goodbye: what it held comes back to the queue
                victim.proc.wait()
                self.kills.append(f"replica on :{victim.port} killed after {self.sent} messages")
                replicas[replicas.index(victim)] = BotProcess(env, logs / f"replica-restarted-{len(self.kills)}.log",
                                                              start="exec")
        return replicas

    def depth(self, visible_only: bool = False) -> int:
        names = ["ApproximateNumberOfMessages"] + ([] if visible_only else ["ApproximateNumberOfMessagesNotVisible",
                                                                             "ApproximateNumberOfMessagesDelayed"])
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
        return sum(int(v) for v in attrs["Attributes"].values())

    def dead_depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def dead_letters(self) -> list[dict[str, Any]]:
        sqs, found, seen = self.sqs, [], set()
        for _ in range(20):
            msgs = sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                       MessageAttributeNames=["All"]).get("Messages", [])
            for m in msgs:
                if m["MessageId"] not in seen:
                    seen.add(m["MessageId"])
                    found.append(m)
            if not msgs:
                break
        return found

    def waiting(self) -> int:
        return cards_waiting(boto3.client("dynamodb"), self.table)

    # --- the verdict ---------------------------------------------------------------------

    def expected_status(self, e: Execution) -> str:
        return {"Succeeded": "Succeeded", "Failed": "Failed"}[e.status]

    def verify(self, dead: list[dict[str, Any]], log_lines: list[dict[str, Any]]) -> Counter[str]:
        """Every execution: one card, in its true final state, shown as such in Slack. Returns the tally."""
        ddb = boto3.client("dynamodb")
        tally: Counter[str] = Counter()
        problems: list[str] = []
        messages = {(m.channel, m.ts): m for m in self.slack.messages if m.thread_ts is None}
        cards_in_channels = Counter(m.channel for m in messages.values() if m.blocks
                                    and "execution `" in json.dumps(m.blocks))
        for e in self.executions:
            item = ddb.get_item(TableName=self.table, ConsistentRead=True,
                                Key={"pk": {"S": f"EXEC#{e.id}"}, "sk": {"S": "CARD"}}).get("Item")
            if item is None:
                problems.append(f"{e.id}: no card")
                continue
            card = DeployCard.from_json(item["body"]["S"])
            expected = self.expected_status(e)
            if card.status != expected:
                problems.append(f"{e.id}: card says {card.status}, the pipeline {expected}")
            decision = next((r.summary for (s, _), r in e.actions.items() if s == "Approval"), None)
            if decision and (not card.approval.decision or card.approval.decision not in decision):
                problems.append(f"{e.id}: approval {card.approval.decision}, the console said {decision}")
            scanned = {ev["detail"]["repository-name"] for ev in e.events if ev["source"] == "aws.ecr"}
            if set(card.scans) != scanned:
                problems.append(f"{e.id}: the card shows scans of {sorted(card.scans)}, not {sorted(scanned)}")
            message = messages.get((card.channel, card.ts or ""))
            if message is None:
                problems.append(f"{e.id}: no Slack message for the card")
            elif message.blocks != render_card(card)[1]:
                problems.append(f"{e.id}: the message does not show the card's final state")
            tally[f"{card.environment} {card.status}"] += 1
        strays = [m.text[:80] for m in messages.values() if "No deploy is using this image" in m.text]
        if strays:
            problems.append(f"{len(strays)} scan(s) of a deploy's image reported as if no deploy used it")
        dupes = sum(cards_in_channels.values()) - len(self.executions)
        if dupes:
            problems.append(f"{dupes} card message(s) more than executions: {dict(cards_in_channels)}")
        if self.depth():
            problems.append(f"{self.depth()} message(s) still on the queue")
        reasons = {line.get("message_id"): line.get("reason") for line in log_lines if line.get("reason")}
        bodies = Counter(m["Body"] for m in dead)
        if bodies != Counter(POISON[:self.plan.poison]):
            problems.append(f"the dead-letter queue holds {len(dead)} message(s), not the {self.plan.poison} poison")
        unexplained = [m["MessageId"] for m in dead if not reasons.get(m["MessageId"])]
        if unexplained:
            problems.append(f"dead letters without a logged reason: {unexplained}")
        assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
        return tally
