"""The promises a bot that approves production deploys must keep, under misbehaviour and hostile input."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import parse_config
from bot.delivery.command_parser import CommandParser, ErpCommand, UsageError
from bot.slack.deploy_card_blocks import REJECT_ACTION
from sandbox.aws_fault_proxy import AwsFaultProxy
from sandbox.aws_fault_proxy import Fault as AwsFault
from sandbox.codepipeline import PipelineStandIn
from sandbox.slack_signing import interaction_body, signed_headers
from sandbox.slack_workspace import Fault, SlackWorkspace
from tests.support import BOT_TOKEN, SIGNING_SECRET, BackgroundLoop, BotProcess, base_config, http, wait_until

PARSER = CommandParser(parse_config(base_config("q", "t"), "t.yaml"))
INJECTIONS = ["employee; rm -rf /", "$(id)", "`id`", "employee && curl evil", "| stats count(*)", "../../etc/passwd",
              "employee\nprod", "'; DROP TABLE", "${IFS}", "<script>", "\u202eprod"]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gets_a_reply_never_an_exception(text: str):
    try:
        result = PARSER.parse(text)
    except UsageError as e:
        assert e.message and "\n" not in e.message and len(e.message) < 600
    else:
        assert isinstance(result, ErpCommand)


def test_injection_attempts_in_every_argument_are_refused_or_inert():
    for bad in INJECTIONS:
        for template in ("deploy {} prod", "deploy employee {}", "rollback {} prod", "scan employee {}",
                         "status {}", "history {}", "logs {}", "rollback employee prod {}"):
            try:
                cmd = PARSER.parse(template.format(bad))
            except UsageError:
                continue
            # accepted only where the text is inert data: never as a service, environment, tag or revision
            assert cmd.service in (None, *PARSER.services, "all")
            assert cmd.environment in (None, *PARSER.environments)
            assert cmd.tag is None or cmd.tag.replace("-", "").replace(".", "").replace("_", "").isalnum()


def card_of(slack: SlackWorkspace, channel: str) -> str:
    cards = slack.channel_messages(channel)
    return json.dumps(cards[0].blocks) if cards else ""


def test_hostile_payloads_get_4xx_never_5xx(bot: BotProcess):
    bodies = [
        interaction_body({"type": "block_actions", "user": {"id": "U0DEV1"}, "actions": [{"action_id": "deploy_approve",
                                                                                          "value": "x" * 5000}]}),
        interaction_body({"type": "view_submission", "user": {"id": "U0APPR1"}, "view": {"callback_id": "deploy_reject_reason",
                                                                                           "private_metadata": "nope"}}),
        interaction_body({"type": 7}), interaction_body([]), "payload=null", "command=%2Ferp&text=" + "%00" * 100,
    ]
    for body in bodies:
        status, _, _ = http("POST", f"{bot.url}/slack/events", body.encode(), signed_headers(SIGNING_SECRET, body))
        assert status < 500, body[:80]
    time.sleep(1)
    assert http("GET", f"{bot.url}/healthz")[0] == 200


def test_slack_rate_limits_and_outages_still_end_in_the_right_card(bot: BotProcess, slack: SlackWorkspace,
                                                                   background_loop: BackgroundLoop,
                                                                   pipeline: PipelineStandIn):
    slack.faults += [Fault("chat.update", status=429, error="ratelimited", retry_after=1, times=2),
                     Fault("chat.update", status=503, error="service_unavailable", times=2),
                     Fault("chat.postMessage", status=500, error="internal_error", times=1),
                     Fault("chat.update", reset=True, error="connection_reset", times=2)]
    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
    wait_until(lambda: "Succeeded" in card_of(slack, "C0DEV"), timeout=60, what="the card to end Succeeded")
    assert len(slack.channel_messages("C0DEV")) == 1
    failed = [c for c in slack.calls if not c.ok]
    assert {c.error for c in failed} >= {"ratelimited", "service_unavailable", "internal_error", "connection_reset"}
    # the last successful edit is the final state: no stale edit landed after it
    last = [c for c in slack.calls_to("chat.update") if c.ok][-1]
    assert "Succeeded" in json.dumps(last.args.get("blocks"))


def test_a_thread_note_slack_refuses_is_posted_later_not_lost(bot: BotProcess, slack: SlackWorkspace,
                                                             background_loop: BackgroundLoop,
                                                             pipeline: PipelineStandIn):
    # Slack refuses the thread replies for a while (ok: false, no retry by slack_sdk): the note waits in the
    # card's outbox and goes out when Slack takes it
    slack.faults.append(Fault("chat.postMessage", error="fatal_error", times=3, in_thread=True))
    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
    wait_until(lambda: "Succeeded" in card_of(slack, "C0DEV"), timeout=60, what="the card to end Succeeded")
    card = slack.channel_messages("C0DEV")[0]
    wait_until(lambda: [m for m in slack.thread("C0DEV", card.ts) if "Scan of" in m.text], timeout=60,
               what="the scan note, after the refusals")
    assert [c.error for c in slack.calls_to("chat.postMessage") if not c.ok] == ["fatal_error"] * 3
    assert len([m for m in slack.thread("C0DEV", card.ts) if "Scan of" in m.text]) == 1


def test_a_card_deleted_in_slack_is_posted_again_and_ends_right(bot: BotProcess, slack: SlackWorkspace,
                                                              background_loop: BackgroundLoop,
                                                              pipeline: PipelineStandIn,
                                                              aws_resources: dict[str, str]):
    pipeline.step = 0.5  # slow enough to delete the card while the deploy runs
    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
    first = wait_until(lambda: slack.channel_messages("C0DEV"), what="the card")[0]
    slack.messages.remove(first)  # someone deletes the card: the next chat.update says message_not_found
    wait_until(lambda: "Succeeded" in card_of(slack, "C0DEV"), timeout=60, what="a card showing Succeeded")
    [card] = slack.channel_messages("C0DEV")
    assert card.ts != first.ts and "message_not_found" in {c.error for c in slack.calls_to("chat.update")}
    dead = boto3.client("sqs").receive_message(QueueUrl=aws_resources["dlq_url"], WaitTimeSeconds=1)
    assert dead.get("Messages", []) == []


def test_codepipeline_throttling_is_absorbed_by_retries(bot: BotProcess, slack: SlackWorkspace,
                                                        background_loop: BackgroundLoop, pipeline: PipelineStandIn):
    pipeline.faults.throttle = 2  # botocore's standard retry mode rides these out
    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy notification dev"))
    wait_until(lambda: "Succeeded" in card_of(slack, "C0DEV"), timeout=60, what="the deploy")
    assert len(pipeline.executions) == 1 and len(slack.channel_messages("C0DEV")) == 1


def test_throttling_past_the_retries_says_so_and_leaves_no_card(bot: BotProcess, slack: SlackWorkspace,
                                                                background_loop: BackgroundLoop,
                                                                pipeline: PipelineStandIn):
    pipeline.faults.throttle = 50
    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
    answer = wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1") if "throttling" in m.text],
                        timeout=60, what="the answer")[0]
    assert "Nothing was started" in answer
    assert pipeline.executions == {} and slack.channel_messages("C0DEV") == []


@pytest.mark.slow
def test_a_replica_killed_mid_run_loses_nothing(bot: BotProcess, bot_env: dict[str, str], slack: SlackWorkspace,
                                                background_loop: BackgroundLoop, pipeline: PipelineStandIn,
                                                aws_resources: dict[str, str], tmp_path: Path):
    boto3.client("sqs").set_queue_attributes(QueueUrl=aws_resources["queue_url"],
                                             Attributes={"VisibilityTimeout": "4"})
    second = BotProcess(bot_env, tmp_path / "second.log")

    async def pushes() -> None:
        for _ in range(8):
            pipeline.start_from_push("dev")
    background_loop.run(pushes())
    time.sleep(0.8)
    second.proc.send_signal(signal.SIGKILL)  # no goodbye: whatever it held comes back to the queue
    second.proc.wait()
    third = BotProcess(bot_env, tmp_path / "third.log")
    try:
        wait_until(lambda: len([m for m in slack.channel_messages("C0DEV") if "Succeeded" in json.dumps(m.blocks)])
                   == 8, timeout=90, what="eight finished cards")
        assert len(slack.channel_messages("C0DEV")) == 8  # one per execution, none twice
        sqs = boto3.client("sqs")
        dead = sqs.get_queue_attributes(QueueUrl=aws_resources["dlq_url"],
                                        AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        assert dead["ApproximateNumberOfMessages"] == "0"
    finally:
        third.stop_soon()
        second.stop_soon()


def test_secrets_appear_nowhere(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop,
                                pipeline: PipelineStandIn):
    pipeline.faults.fail_build.add("employee")
    background_loop.run(slack.send_command("U0DEV1", "C0PROD", "deploy employee prod"))
    background_loop.run(slack.send_command("U0DEV1", "C0PROD", "deploy nope prod"))
    wait_until(lambda: "Failed" in card_of(slack, "C0PROD"), timeout=60, what="the failure")
    metrics = http("GET", bot.metrics_url)[1]
    log = bot.log_path.read_text()
    everything = [log, metrics, json.dumps([c.args for c in slack.calls]),
                  json.dumps([(m.text, m.blocks) for m in slack.messages])]
    for secret in (BOT_TOKEN, SIGNING_SECRET):
        for place in everything:
            assert secret not in place


@contextlib.contextmanager
def faulty_aws_bot(bot_env: dict[str, str], proxy: AwsFaultProxy, slack: SlackWorkspace,
                   log: Path) -> Iterator[BotProcess]:
    """The bot with SQS and DynamoDB behind the fault-injecting proxy (CodePipeline and the rest direct)."""
    process = BotProcess({**bot_env, "AWS_ENDPOINT_URL_SQS": proxy.url, "AWS_ENDPOINT_URL_DYNAMODB": proxy.url}, log)
    slack.bot_url = f"{process.url}/slack/events"
    try:
        yield process
    finally:
        process.stop_soon()


def test_sqs_and_dynamodb_throttling_and_5xx_are_absorbed(bot_env: dict[str, str], aws_faults: AwsFaultProxy,
                                                         slack: SlackWorkspace, background_loop: BackgroundLoop,
                                                         pipeline: PipelineStandIn, aws_resources: dict[str, str],
                                                         tmp_path: Path):
    aws_faults.faults += [AwsFault("dynamodb", "throttle", times=12, every=3),
                          AwsFault("dynamodb", "internal", times=3, every=5),
                          AwsFault("sqs", "throttle", times=6, every=2), AwsFault("sqs", "unavailable", times=3, every=3),
                          AwsFault("sqs", "reset", times=2, every=5)]
    with faulty_aws_bot(bot_env, aws_faults, slack, tmp_path / "bot.log") as bot:
        background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
        wait_until(lambda: "Succeeded" in card_of(slack, "C0DEV"), timeout=90, what="the card to end Succeeded")
        assert len(pipeline.executions) == 1 and len(slack.channel_messages("C0DEV")) == 1
        assert aws_faults.count("dynamodb") >= 10 and aws_faults.count("sqs") >= 6  # the faults did happen
        assert {kind for _, _, kind in aws_faults.injected} == {"throttle", "internal", "unavailable", "reset"}
        metrics = http("GET", bot.metrics_url)[1]
        assert 'code="ThrottlingException"' in metrics  # retried calls are still counted, per code
        dead = boto3.client("sqs").get_queue_attributes(QueueUrl=aws_resources["dlq_url"],
                                                        AttributeNames=["ApproximateNumberOfMessages"])
        assert dead["Attributes"]["ApproximateNumberOfMessages"] == "0"
        assert not [m for m in slack.ephemerals("U0DEV1") if "AWS is" in m.text]


def test_every_command_and_click_is_acknowledged_within_slacks_three_seconds_when_dynamodb_is_slow(
        bot_env: dict[str, str], aws_faults: AwsFaultProxy, slack: SlackWorkspace,
        background_loop: BackgroundLoop, pipeline: PipelineStandIn, tmp_path: Path):
    with faulty_aws_bot(bot_env, aws_faults, slack, tmp_path / "bot.log"):
        # DynamoDB answers, but each write takes 5 s: nothing before the ack may wait for it
        aws_faults.faults.append(AwsFault("dynamodb", "slow", times=10**6, operation="PutItem", delay=5.0))
        for text in ("deploy employee dev", "status", "deploy nope prod", "help"):
            status, _ = background_loop.run(slack.send_command("U0DEV1", "C0DEV", text))
            assert status == 200, f"/erp {text} was not acknowledged in time"
        assert slack.timeouts == []
        assert not [m for m in slack.ephemerals("U0DEV1") if "operation_timeout" in m.text]
        wait_until(lambda: aws_faults.count("dynamodb") >= 1, 15, "the slow writes, after the acks")


def test_reject_opens_its_modal_within_the_triggers_three_seconds_when_dynamodb_is_slow(
        bot_env: dict[str, str], aws_faults: AwsFaultProxy, slack: SlackWorkspace,
        background_loop: BackgroundLoop, pipeline: PipelineStandIn, tmp_path: Path):
    with faulty_aws_bot(bot_env, aws_faults, slack, tmp_path / "bot.log"):
        background_loop.run(slack.send_command("U0DEV1", "C0PROD", "deploy notification prod"))
        wait_until(lambda: "Waiting for approval" in card_of(slack, "C0PROD"), timeout=30, what="the approval")
        card = next(m for m in slack.channel_messages("C0PROD") if "Deploy " in json.dumps(m.blocks))
        # every read of the card now takes longer than a trigger lives
        aws_faults.faults.append(AwsFault("dynamodb", "slow", times=10**6, operation="GetItem", delay=3.5))
        background_loop.run(slack.click("U0APPR1", card, REJECT_ACTION))
        view_id = wait_until(lambda: next((v for v, view in slack.views.items() if "reason" in json.dumps(view)),
                                          None), timeout=30, what="the reason form")
        assert not [c for c in slack.calls_to("views.open") if not c.ok]
        aws_faults.faults.clear()
        background_loop.run(slack.submit_view("U0APPR1", view_id, {"reason": {"reason": "Not during the sale"}}))
        wait_until(lambda: "Rejected" in card_of(slack, "C0PROD"), timeout=30, what="the rejection")


def test_a_failing_consumer_backs_off_reports_unready_and_recovers(
        bot_env: dict[str, str], aws_faults: AwsFaultProxy, slack: SlackWorkspace,
        background_loop: BackgroundLoop, pipeline: PipelineStandIn, tmp_path: Path):
    # DynamoDB keeps handing the consumer's batch read back: an error in the batch code, not in receiving
    stuck = AwsFault("dynamodb", "unprocessed", times=10**6, operation="BatchGetItem")
    aws_faults.faults.append(stuck)
    with faulty_aws_bot({**bot_env, "UNREADY_AFTER_FAILING_SECONDS": "2"}, aws_faults, slack, tmp_path / "bot.log") as bot:
        background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
        _, body, _ = wait_until(lambda: (r := http("GET", f"{bot.url}/readyz"))[0] == 503 and r,
                                     timeout=60, what="the replica to report itself unready")
        assert any(name.startswith("event consumer") for name in json.loads(body)) and "failing for" in body
        assert not [line for line in bot.log_lines() if "Traceback" in str(line.get("message", ""))]
        stuck.times = 0  # DynamoDB recovers: the same consumer carries on, nothing was lost
        wait_until(lambda: "Succeeded" in card_of(slack, "C0DEV"), timeout=90, what="the card to catch up")
        wait_until(lambda: http("GET", f"{bot.url}/readyz")[0] == 200, timeout=30, what="ready again")
        assert any("working again" in str(line.get("message", "")) for line in bot.log_lines())


def test_a_consumer_failing_past_its_bound_exits_so_kubernetes_replaces_the_pod(
        bot_env: dict[str, str], aws_faults: AwsFaultProxy, slack: SlackWorkspace, tmp_path: Path):
    aws_faults.faults.append(AwsFault("sqs", "internal", times=10**6, operation="ReceiveMessage"))
    with faulty_aws_bot({**bot_env, "EXIT_AFTER_FAILING_SECONDS": "4"}, aws_faults, slack, tmp_path / "bot.log") as bot:
        wait_until(lambda: bot.proc.poll() is not None, timeout=60, what="the process to exit")
        assert bot.proc.returncode == 1
        assert any("exiting so this pod is replaced" in str(line.get("message", "")) for line in bot.log_lines())


def test_dynamodb_down_a_deploy_says_so_and_starts_nothing(bot_env: dict[str, str], aws_faults: AwsFaultProxy,
                                                           slack: SlackWorkspace, background_loop: BackgroundLoop,
                                                           pipeline: PipelineStandIn, tmp_path: Path):
    outage = AwsFault("dynamodb", "unavailable", times=10**6)
    aws_faults.faults.append(outage)
    with faulty_aws_bot(bot_env, aws_faults, slack, tmp_path / "bot.log"):
        background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
        answer = wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1") if "AWS is" in m.text],
                            timeout=90, what="the answer")[0]
        assert "not answering" in answer and "stopped before changing anything" in answer and "\n" not in answer
        assert pipeline.executions == {} and slack.channel_messages("C0DEV") == []  # no card, no execution
        outage.times = 0  # DynamoDB is back: the same command works
        background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
        wait_until(lambda: "Succeeded" in card_of(slack, "C0DEV"), timeout=60, what="the deploy after the outage")
        assert len(pipeline.executions) == 1 and len(slack.channel_messages("C0DEV")) == 1
