"""Approvals that do not rot, end to end: the real bot process sweeping, the CodePipeline stand-in (its clock
set back to make an approval old), signed clicks, the local Slack Web API."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sandbox.codepipeline import Execution, PipelineStandIn
from sandbox.slack_workspace import SlackWorkspace
from tests.handlers.test_deploy import APPROVE_ACTION, card_text, command, wait_for_card
from tests.support import BackgroundLoop, BotProcess, base_config, wait_until, write_config


def start_bot(bot_env: dict[str, str], slack: SlackWorkspace, aws_resources: dict[str, str], tmp_path: Path,
              **reminders: object) -> BotProcess:
    config = base_config(aws_resources["queue_url"], aws_resources["table"], aws_resources["progress_queue_url"])
    config["environments"]["prod"]["approval_reminders"] = reminders
    path = write_config(tmp_path / "reminders.yaml", config)
    process = BotProcess({**bot_env, "BOT_CONFIG": str(path), "APPROVAL_SWEEP_SECONDS": "0.5"}, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    return process


def notes(slack: SlackWorkspace, ts: str, needle: str) -> list[str]:
    return [m.text for m in slack.thread("C0PROD", ts) if needle in m.text]


def test_a_waiting_approval_reminds_once_per_interval_and_stops_when_decided(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop, pipeline: PipelineStandIn,
        aws_resources: dict[str, str], tmp_path: Path):
    process = start_bot(bot_env, slack, aws_resources, tmp_path, every="1h", escalate_after="3h",
                        escalate_to=["S0DEVS"])
    try:
        pipeline.advance(-150 * 60)  # the request was made two and a half hours ago
        command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
        card = wait_for_card(slack, "C0PROD", "Waiting for approval", timeout=30)
        assert "waiting since <!date^" in card_text(card) and "expires <!date^" in card_text(card)
        wait_until(lambda: notes(slack, card.ts, "Still waiting for approval after 2h 30m"), 20, "the reminder")
        time.sleep(2)  # several sweeps, by then
        assert len(notes(slack, card.ts, "Still waiting for approval")) == 1
        assert not notes(slack, card.ts, "can you decide")  # not yet three hours: no escalation
        background_loop.run(slack.click("U0APPR1", card, APPROVE_ACTION))
        wait_for_card(slack, "C0PROD", "Succeeded", timeout=30)
        time.sleep(1.5)
        assert len(notes(slack, card.ts, "Still waiting for approval")) == 1
    finally:
        process.stop_soon()


def test_a_newer_deploy_at_the_approval_supersedes_and_rejects_the_older(
        bot_env: dict[str, str], slack: SlackWorkspace, background_loop: BackgroundLoop, pipeline: PipelineStandIn,
        aws_resources: dict[str, str], tmp_path: Path):
    process = start_bot(bot_env, slack, aws_resources, tmp_path, every="4h", reject_superseded=True)
    try:
        command(background_loop, slack, "U0DEV1", "C0PROD", "deploy employee prod")
        older_card = wait_for_card(slack, "C0PROD", "Waiting for approval", timeout=30)
        [older] = pipeline.executions.values()

        async def console_start() -> Execution:  # a second employee deploy to prod, from the console
            return pipeline.start({"SERVICE": "employee", "ENVIRONMENT": "prod"}, trigger_type="StartPipelineExecution")
        newer = background_loop.run(console_start())
        wait_until(lambda: notes(slack, older_card.ts, "Superseded"), 30, "the superseded note")
        [note] = notes(slack, older_card.ts, "Superseded")
        assert f"execution `{newer.id[:8]}`" in note and "its card" in note
        wait_until(lambda: older.status == "Failed", 30, "the older execution to be rejected")
        assert older.actions[("Approval", "Approval")].summary == f"Superseded by execution {newer.id} (erp-chatops)"
        wait_until(lambda: "Rejected by*\\nerp-chatops" in json.dumps(older_card.blocks), 20,
                   "the older card to say the bot rejected it")
        assert newer.status == "InProgress"  # the newer one still waits for its approver
    finally:
        process.stop_soon()
