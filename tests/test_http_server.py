"""The real server process, reached as Slack reaches it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox.codepipeline import PipelineStandIn
from sandbox.slack_signing import signed_headers, slash_command_body
from sandbox.slack_workspace import Fault, SlackWorkspace
from tests.support import (
    BOT_TOKEN,
    SIGNING_SECRET,
    BackgroundLoop,
    BotProcess,
    base_config,
    http,
    wait_until,
    write_config,
)


def command_body(text: str, user: str = "U0DEV1", channel: str = "C0DEV") -> str:
    return slash_command_body(text=text, user_id=user, user_name="dana", channel_id=channel, channel_name="erp-dev",
                              response_url="http://127.0.0.1:9/response/x", trigger_id="1.2")


def post_command(bot: BotProcess, body: str, headers: dict[str, str]) -> tuple[int, str]:
    status, text, _ = http("POST", f"{bot.url}/slack/events", body.encode(), headers)
    return status, text


def test_signed_help_is_answered_in_the_ack(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    status, reply = background_loop.run(slack.send_command("U0DEV1", "C0DEV", "help"))
    assert status == 200
    answer = json.loads(reply)
    assert answer["response_type"] == "ephemeral"
    shown = json.dumps(answer["blocks"])
    for verb in ("deploy", "rollback", "logs", "scan", "status", "history"):
        assert f"/erp {verb}" in shown
    assert "`employee`" in shown and "`prod`" in shown
    # the user sees it as an ephemeral message in the channel where they typed
    [msg] = slack.ephemerals("U0DEV1")
    assert msg.channel == "C0DEV" and "deploy" in json.dumps(msg.blocks)


def test_help_for_one_verb_gives_examples(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    _, reply = background_loop.run(slack.send_command("U0DEV1", "C0DEV", "help logs"))
    shown = json.dumps(json.loads(reply)["blocks"])
    assert "/erp logs notification prod 30m ERROR" in shown
    assert "/erp deploy" not in shown


@pytest.mark.parametrize("case", ["unsigned", "wrong secret", "stale", "altered body", "future"])
def test_badly_signed_requests_get_401_and_nothing_runs(bot: BotProcess, slack: SlackWorkspace, case: str):
    body = command_body("deploy employee dev")
    if case == "unsigned":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elif case == "wrong secret":
        headers = signed_headers("not-the-signing-secret-at-all", body)
    elif case == "stale":
        headers = signed_headers(SIGNING_SECRET, body, int(time.time()) - 301)
    elif case == "future":
        headers = signed_headers(SIGNING_SECRET, body, int(time.time()) + 3600)
    else:
        headers = signed_headers(SIGNING_SECRET, body)
        body = body.replace("employee", "notification")
    status, text = post_command(bot, body, headers)
    assert status == 401
    assert "not available" not in text and "deploy" not in text
    time.sleep(0.3)
    # only the start-up checks: the channels, and Slack answering at all (readiness)
    assert [c for c in slack.calls if c.method not in ("conversations.info", "auth.test")] == []
    assert "erp_chatops_command_seconds_count" not in http("GET", bot.metrics_url)[1]


@pytest.mark.parametrize(("text", "expected"), [
    ("deploy employe prod", "Unknown service `employe`: did you mean `employee`?"),
    ("deploy employee prdo", "Unknown environment `prdo`: did you mean `prod`?"),
    ("deplyo employee prod", "Unknown command `deplyo`: did you mean `/erp deploy`?"),
    ("logs notification prod 15x", "Cannot read the time window `15x`"),
    # what was typed is shown as text, never as a mention, a channel ping or a link (issue 18 item 8)
    ("deploy <!channel> prod", "Unknown service `&lt;!channel&gt;`"),
    ("<!here> now", "Unknown command `&lt;!here&gt;`"),
    ("deploy <https://evil.example|prod>", "Unknown service or environment `&lt;https://evil.example|prod&gt;`"),
])
def test_mistakes_get_a_one_line_ephemeral_answer(bot: BotProcess, slack: SlackWorkspace,
                                                  background_loop: BackgroundLoop, text: str, expected: str):
    status, reply = background_loop.run(slack.send_command("U0DEV1", "C0DEV", text))
    assert status == 200
    answer = json.loads(reply)
    assert answer["response_type"] == "ephemeral"
    assert expected in answer["text"]
    assert "\n" not in answer["text"] and "<!" not in answer["text"] and "<https" not in answer["text"]
    assert "Traceback" not in reply


def test_malformed_bodies_never_get_a_5xx(bot: BotProcess):
    for body in ["", "payload=%7Bnot-json", "payload=" + "x" * 5000, "command=/erp&text=%ff%fe",
                 "payload=%7B%22type%22%3A%22block_actions%22%7D"]:
        status, _ = post_command(bot, body, signed_headers(SIGNING_SECRET, body))
        assert status < 500, body[:40]
    huge = "text=" + "a" * (300 * 1024)
    status, _ = post_command(bot, huge, signed_headers(SIGNING_SECRET, huge))
    assert status == 413


def test_health_readiness_and_metrics(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    assert http("GET", f"{bot.url}/healthz")[0] == 200
    status, body, _ = http("GET", f"{bot.url}/readyz")
    assert status == 200, body
    details = json.loads(body)
    assert details["status"] == "ready"
    assert details["slack"].startswith("ok") and details["aws"] == "ok" and "config.yaml" in details["config"]
    assert slack.calls_to("auth.test")

    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "help"))
    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employe prod"))
    post_command(bot, "x=1", {"Content-Type": "application/x-www-form-urlencoded"})
    assert http("GET", f"{bot.url}/metrics")[0] == 404  # its own port, not the one open to Slack
    status, text, headers = http("GET", bot.metrics_url)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'erp_chatops_http_requests_total{route="/slack/events",status="200"} 2.0' in text
    assert 'erp_chatops_http_requests_total{route="/slack/events",status="401"} 1.0' in text
    assert 'erp_chatops_command_seconds_count{verb="help"} 1.0' in text
    assert 'erp_chatops_command_seconds_count{verb="invalid"} 1.0' in text
    for family in ("erp_chatops_events_processed", "erp_chatops_events_failed", "erp_chatops_slack_api_errors",
                   "erp_chatops_aws_api_errors"):
        assert f"# TYPE {family}_total counter" in text or f"# TYPE {family} counter" in text


def test_readyz_rides_out_a_slack_rate_limit(bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path):
    slack.faults.append(Fault("auth.test", status=429, error="ratelimited", retry_after=1))
    process = BotProcess(bot_env, tmp_path / "bot.log")  # its first check, at start-up, meets the limit
    try:
        status, body, _ = http("GET", f"{process.url}/readyz")
        assert status == 200, body
        assert [c.ok for c in slack.calls_to("auth.test")] == [False, True]
    finally:
        process.stop_soon()


def test_a_starting_pod_checks_itself_once_however_many_probes_ask(bot_env: dict[str, str], slack: SlackWorkspace,
                                                                    tmp_path: Path):
    """The kubelet's startup and readiness probes (and a person's curl) arrive together on a new pod: one
    auth.test and one DynamoDB ping answer them all, begun as the pod starts listening, not one per probe."""
    process = BotProcess(bot_env, tmp_path / "bot.log")
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: http("GET", f"{process.url}/readyz")[:2], range(6)))
        assert all(status == 200 for status, _ in answers), answers
        assert len(slack.calls_to("auth.test")) == 1
    finally:
        process.stop_soon()


def test_readyz_says_what_is_missing(bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path,
                                     aws_resources: dict[str, str], background_loop: BackgroundLoop):
    cfg = write_config(tmp_path / "missing-table.yaml", base_config(aws_resources["queue_url"], "no-such-table"))
    process = BotProcess({**bot_env, "BOT_CONFIG": str(cfg), "SLACK_BOT_TOKEN": "xoxb-revoked-token"},
                         tmp_path / "bot2.log")
    try:
        status, body, _ = http("GET", f"{process.url}/readyz")
        assert status == 503
        details = json.loads(body)
        assert details["aws"] == "failed: ResourceNotFoundException"
        assert details["slack"] == "failed: SlackApiError"
        assert "metrics" not in body and "xoxb" not in body
        assert 'erp_chatops_aws_api_errors_total{code="ResourceNotFoundException",operation="DescribeTable"' \
               in http("GET", process.metrics_url)[1]
    finally:
        process.stop_soon()


def test_sigterm_drains_and_exits_cleanly(bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path):
    # `python -m bot serve` itself, not forked from the tests' launcher: the entry point as the image runs it
    bot = BotProcess(bot_env, tmp_path / "bot.log", start="exec")
    slack.bot_url = f"{bot.url}/slack/events"
    started = time.monotonic()
    bot.proc.send_signal(signal.SIGTERM)
    code = bot.proc.wait(25)
    assert code == 0
    assert time.monotonic() - started < 20
    messages = [line.get("message", "") for line in bot.log_lines()]
    assert any(m.startswith("shutting down") for m in messages) and "stopped" in messages


def test_logs_are_json_lines_without_secrets(bot: BotProcess, slack: SlackWorkspace,
                                             background_loop: BackgroundLoop):
    background_loop.run(slack.send_command("U0DEV1", "C0DEV", "help"))
    bot.stop()
    text = bot.log_path.read_text()
    assert text.strip()
    for line in text.splitlines():
        entry = json.loads(line)
        assert {"time", "level", "message"} <= entry.keys()
    assert BOT_TOKEN not in text and SIGNING_SECRET not in text


@pytest.mark.parametrize(("setup", "expected"), [
    ({"BOT_CONFIG": ""}, "BOT_CONFIG is not set"),
    ({"SLACK_BOT_TOKEN": "", "SLACK_SECRET_ID": ""}, "missing SLACK_BOT_TOKEN"),
    ({"BOT_CONFIG": "/nonexistent/erp.yaml"}, "/nonexistent/erp.yaml: cannot read the file"),
])
def test_startup_errors_are_one_line(bot_env: dict[str, str], setup: dict[str, str], expected: str):
    env = {**bot_env, **setup}
    result = subprocess.run([sys.executable, "-m", "bot", "serve"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_verb_the_parser_knows_has_a_handler():
    import handlers
    from bot.delivery.command_parser import VERBS

    assert set(handlers.VERBS) | {"help"} == set(VERBS)


def test_a_replayed_request_is_refused_by_every_replica(bot: BotProcess, bot_env: dict[str, str],
                                                       slack: SlackWorkspace, background_loop: BackgroundLoop,
                                                       pipeline: PipelineStandIn, tmp_path: Path):
    status, _ = background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))
    assert status == 200
    wait_until(lambda: pipeline.executions, what="the deploy to start")
    other = BotProcess(bot_env, tmp_path / "other.log")
    try:
        # the same signed bytes again, inside Slack's 5 minutes: the same replica refuses it at once; another
        # one acknowledges it (its ack waits for no table) and then does nothing for it
        assert background_loop.run(slack.replay())[0] == 401
        assert background_loop.run(slack.replay(f"{other.url}/slack/events"))[0] == 200
        time.sleep(1)
        assert len(pipeline.executions) == 1 and len(slack.channel_messages("C0DEV")) == 1
        assert any("replayed Slack request was refused" in line.get("message", "") for line in other.log_lines())
        # a fresh request for the same thing is not a replay: it gets its own answer
        status, _ = background_loop.run(slack.send_command("U0DEV1", "C0DEV", "help"))
        assert status == 200
    finally:
        other.stop()


def test_a_replayed_lock_to_another_replica_takes_nothing_again(bot: BotProcess, bot_env: dict[str, str],
                                                                slack: SlackWorkspace, background_loop: BackgroundLoop,
                                                                aws_resources: dict[str, str], tmp_path: Path):
    """Review finding: only deploy and rollback were claimed across replicas; a replayed `/erp lock` (or
    promote, unlock) acted again on another replica."""
    import boto3

    status, _ = background_loop.run(slack.send_command("U0DEV1", "C0DEV", "lock dev for 1h migration"))
    assert status == 200
    wait_until(lambda: [m for m in slack.ephemerals("U0DEV1") if "dev is locked by" in m.text], what="the lock")
    other = BotProcess(bot_env, tmp_path / "other.log")
    try:
        assert background_loop.run(slack.replay(f"{other.url}/slack/events"))[0] == 200
        wait_until(lambda: any("replayed Slack request was refused" in line.get("message", "")
                               for line in other.log_lines()), what="the replay refused")
        time.sleep(1)
        audit = boto3.client("dynamodb").query(TableName=f"{aws_resources['table']}-audit",
                                               KeyConditionExpression="pk = :pk",
                                               ExpressionAttributeValues={":pk": {"S": "AUDIT#dev"}})["Items"]
        assert [a["action"]["S"] for a in audit] == ["lock"]
    finally:
        other.stop()


HOSTILE = {
    # name: (body, headers) as an attacker or a broken proxy could send them, before any signature check
    "binary body": (b"\xff\xfe\x00\x80" * 64, {"Content-Type": "application/x-www-form-urlencoded"}),
    "binary json": (b"\xff\xfe\x00\x80" * 64, {"Content-Type": "application/json"}),
    "timestamp not a number": (b"command=%2Ferp&text=help&user_id=U1&channel_id=C1",
                               {"Content-Type": "application/x-www-form-urlencoded",
                                "X-Slack-Request-Timestamp": "yesterday", "X-Slack-Signature": "v0=00"}),
    "deeply nested json": (b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}),
    "deeply nested payload": (b"payload=" + b"%5B" * 50_000 + b"%5D" * 50_000,
                              {"Content-Type": "application/x-www-form-urlencoded"}),
    "too big": (b"text=" + b"a" * (2 * 1024 * 1024), {"Content-Type": "application/x-www-form-urlencoded"}),
    "no content type": (b"\x00\x01", {}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_any_body_before_the_signature_check_gets_a_4xx_and_no_traceback(bot: BotProcess, case: str):
    """Issue 18 item 7: a binary body, a timestamp that is not a number or deeply nested JSON made a 500."""
    body, headers = HOSTILE[case]
    status, text, _ = http("POST", f"{bot.url}/slack/events", body, headers)
    assert 400 <= status < 500, (status, text[:200])
    assert "Traceback" not in text and "internal error" not in text
    errors = [line for line in bot.log_lines() if line.get("level") in ("error", "critical")]
    assert errors == [], errors[:1]


@pytest.mark.parametrize("response_url", ["https://evil.example/commands/T1/1/x",
                                          "http://hooks.slack.com/commands/T1/1/x",
                                          "https://hooks.slack.com.evil.example/commands/T1/1/x",
                                          "https://hooks.slack.com:99999/commands/T1/1/x",
                                          "https://evil.example%2f@hooks.slack.com/commands/T1/1/x"])
def test_a_response_url_that_is_not_slacks_is_refused(bot: BotProcess, slack: SlackWorkspace, response_url: str):
    """Issue 18 item 10: the bot posts answers (log lines, a deploy's details) to the request's response_url;
    only Slack's hooks host is allowed (and the local Slack's own host in the sandbox and the tests)."""
    body = slash_command_body(text="logs notification prod", user_id="U0ONCALL", user_name="sam",
                              channel_id="C0ONCALL", channel_name="oncall", response_url=response_url,
                              trigger_id="1.3")
    status, text = post_command(bot, body, signed_headers(SIGNING_SECRET, body))
    assert status == 400 and "not Slack's" in text
    time.sleep(0.5)
    assert [c for c in slack.calls if c.method not in ("conversations.info", "auth.test")] == []
    assert any("response_url is not Slack's" in str(line.get("message")) for line in bot.log_lines())


def test_answers_after_the_ack_share_one_connection_and_ride_out_a_slack_server_error(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    """An answer after the ack goes to the request's response_url. Bolt's own respond() opened a new
    connection for each (on Slack a TCP and TLS handshake to hooks.slack.com per answer) and gave up on a
    5xx, so the person saw nothing; the bot's answers go through its one session, with slack_sdk's retries."""
    slack.faults.append(Fault("response_url", status=503))  # Slack having a bad moment
    for n in range(1, 4):
        assert background_loop.run(slack.send_command("U0DEV1", "C0DEV", "status dev"))[0] == 200
        wait_until(lambda n=n: len(slack.ephemerals("U0DEV1")) == n, what=f"answer {n}")
    posts = slack.response_posts
    assert [p.ok for p in posts] == [False, True, True, True]
    assert all("dev" in m.text for m in slack.ephemerals("U0DEV1"))
    assert len({p.connection for p in posts}) <= 2, [p.connection for p in posts]
