"""`/erp logs` against moto's CloudWatch Logs seeded with Spring Boot logs, queried through the Logs Insights
stand-in, which really runs each query: the tests check both the query text each form sends and what it finds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from bot.delivery.error_chart import buckets_from_rows, render_chart, summary
from bot.delivery.log_lines import SECTION_LIMIT, fit_for_message, to_line, to_lines
from bot.delivery.log_query import STATS_QUERY, build_query, string_literal
from sandbox.logs_insights import InsightsStandIn
from sandbox.slack_workspace import SlackWorkspace
from tests.support import BackgroundLoop, BotProcess, wait_until

pytestmark = pytest.mark.usefixtures("erp_logs")


def ask(loop: BackgroundLoop, slack: SlackWorkspace, text: str, channel: str = "C0ONCALL") -> str:
    before = len(slack.ephemerals("U0ONCALL"))
    assert loop.run(slack.send_command("U0ONCALL", channel, text))[0] == 200
    return wait_until(lambda: [m.text for m in slack.ephemerals("U0ONCALL")[before:]], what="the answer")[-1]


def test_a_slow_answer_is_the_one_message_the_person_gets(insights: InsightsStandIn, bot: BotProcess,
                                                          slack: SlackWorkspace, background_loop: BackgroundLoop):
    # a Logs Insights query takes a few seconds; Slack cannot replace a slash command's earlier answer,
    # so anything said before the answer would stay behind as a second message
    insights.running_for = 3.0
    assert background_loop.run(slack.send_command("U0ONCALL", "C0ONCALL", "logs notification 3h"))[0] == 200
    wait_until(lambda: any("in prod, last 3h" in m.text for m in slack.ephemerals("U0ONCALL")), what="the answer")
    assert [m.text for m in slack.ephemerals("U0ONCALL") if "in prod, last 3h" not in m.text] == []




@pytest.mark.parametrize(("text", "group", "query_filter"), [
    ("logs notification", "/erp/prod/notification-service", "like /(ERROR|WARN)/"),
    ("logs notification prod 30m ERROR", "/erp/prod/notification-service", 'like "ERROR"'),
    ('logs employee prod 2h "timeout"', "/erp/prod/employee-service", 'like "timeout"'),
    ("logs approval-request prod 2026-11-26T00:00Z connection reset", "/erp/prod/approval-request-service",
     'like "connection reset"'),
])
def test_each_form_sends_the_expected_query(insights: InsightsStandIn, bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop,
                                            text: str, group: str, query_filter: str):
    answer = ask(background_loop, slack, text)
    assert insights.last_query(group) == (f"fields @timestamp, @message, @logStream | filter @message {query_filter}"
                                 " | sort @timestamp desc | limit 1000")
    assert "newest first" in answer or "No " in answer


def test_oncall_gets_prod_and_readable_lines_with_the_rest_in_a_file(bot: BotProcess, slack: SlackWorkspace,
                                                                    background_loop: BackgroundLoop):
    answer = ask(background_loop, slack, "logs notification 3h")
    assert "in prod, last 3h" in answer
    assert "```" in answer and "(+" in answer  # stack traces folded with a count
    body = answer.split("```")[1]
    first = body.strip().splitlines()[0]
    assert first[:8].count(":") == 2 and ("ERROR" in first or "WARN" in first or "INFO" in first)
    # long: the message says what it shows and the whole result is a file in the channel
    assert "showing" in answer and "more; the full result is in the file" in answer
    [upload] = [m for m in slack.channel_messages("C0ONCALL") if m.files]
    assert "<@U0ONCALL> asked for `/erp logs notification prod 3h`" in upload.text
    content = slack.files[upload.files[0]["id"]]["content"].decode()
    assert "\tat org.springframework" in content  # stack traces unfolded in the file
    assert len(content.splitlines()) > 100


def test_errors_and_warnings_are_only_errors_and_warnings(bot: BotProcess, slack: SlackWorkspace,
                                                         background_loop: BackgroundLoop):
    """The seeded logs are mostly INFO: a query that really runs lists none of them under this title."""
    answer = ask(background_loop, slack, "logs notification prod 2h")
    assert "errors and warnings" in answer
    listed = [line for line in answer.split("```")[1].strip().splitlines() if line.strip()]
    assert listed and all(line.split()[1] in ("ERROR", "WARN") for line in listed), listed[:5]
    [upload] = [m for m in slack.channel_messages("C0ONCALL") if m.files]
    content = slack.files[upload.files[0]["id"]]["content"].decode()
    assert " INFO " not in content


def test_stats_counts_the_seeded_incident(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    answer = ask(background_loop, slack, "logs notification prod stats")
    assert "no errors" not in answer and " errors, peak " in answer


def test_channel_environment_and_empty_result(insights: InsightsStandIn, bot: BotProcess, slack: SlackWorkspace,
                                              background_loop: BackgroundLoop):
    logs = boto3.client("logs")
    group = "/erp/dev/employee-service"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    now = int(datetime.now(UTC).timestamp() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": now - 60_000, "message": "2026-11-26T03:00:00.000Z ERROR 1 --- [main] c.e.erp.Boot : boom"}])
    answer = ask(background_loop, slack, "logs employee", channel="C0DEV")
    assert "in dev, last 15m" in answer and "Boot: boom" in answer and "showing" not in answer
    answer = ask(background_loop, slack, "logs employee dev 2026-01-01T00:00Z", channel="C0DEV")
    assert insights.last_query(group).startswith("fields @timestamp")


def test_hostile_filters_stay_string_literals(insights: InsightsStandIn, bot: BotProcess, slack: SlackWorkspace,
                                              background_loop: BackgroundLoop):
    ask(background_loop, slack, """logs employee prod 1h 'x" | stats count(*) by @logStream | filter "y'""")
    query = insights.last_query("/erp/prod/employee-service")
    assert query == ('fields @timestamp, @message, @logStream | filter @message like '
                     '"x\\" | stats count(*) by @logStream | filter \\"y" | sort @timestamp desc | limit 1000')
    answer = ask(background_loop, slack, "logs employee prod 1h '<!channel> <@U0DEV1> <https://evil.example|x>'")
    assert 'lines matching "&lt;!channel&gt; &lt;@U0DEV1&gt; &lt;https://evil.example|x&gt;"' in answer
    assert "<!channel>" not in answer and "<https://evil" not in answer  # shown as typed, never live markup
    ask(background_loop, slack, "logs employee prod 1h /.*/ 'a\\b'")  # a regex and a backslash, as text
    assert insights.last_query("/erp/prod/employee-service").endswith('like "/.*/ a\\\\b" | sort @timestamp desc | limit 1000')


@pytest.mark.parametrize(("text", "expected"), [
    ("logs employe", "Unknown service `employe`: did you mean `employee`?"),
    ("logs employee prod 10 minutes", "Cannot read the time window `10`: use 15m, 2h, 1d or an ISO time"),
    ("logs notification dev", "The log group `/erp/dev/notification-service` does not exist"),
])
def test_bad_input_gets_one_line(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop,
                                 text: str, expected: str):
    answer = ask(background_loop, slack, text)
    assert expected in answer and "\n" not in answer


def test_stats_sends_the_teams_query_and_a_chart(insights: InsightsStandIn, bot: BotProcess, slack: SlackWorkspace,
                                                 background_loop: BackgroundLoop):
    answer = ask(background_loop, slack, "logs approval-processing prod stats")
    assert insights.last_query("/erp/prod/approval-processing-service") == STATS_QUERY
    assert "Errors per 5 minutes for `approval-processing` in prod, last 3h" in answer
    [upload] = [m for m in slack.channel_messages("C0ONCALL") if m.files]
    assert upload.files[0]["name"] == "errors-per-5m.png"
    assert slack.files[upload.files[0]["id"]]["content"].startswith(b"\x89PNG")


def test_a_query_past_its_budget_is_stopped(bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path,
                                            background_loop: BackgroundLoop):
    process = BotProcess({**bot_env, "LOG_QUERY_BUDGET_SECONDS": "0"}, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    try:
        answer = ask(background_loop, slack, "logs employee prod 1h")
        assert "took longer than 0s, so I stopped it" in answer and "/erp logs employee prod 5m" in answer
    finally:
        process.stop_soon()


def test_a_person_past_the_query_limit_gets_one_line_and_no_query(insights: InsightsStandIn,
                                                                  bot_env: dict[str, str], slack: SlackWorkspace,
                                                                  tmp_path: Path, background_loop: BackgroundLoop):
    """Issue 18 item 9: a per-person limit on log queries (and on deploys and rollbacks), shared by replicas."""
    env = {**bot_env, "USER_LOG_QUERIES_PER_WINDOW": "2", "USER_LIMIT_WINDOW_SECONDS": "3600"}
    replicas = [BotProcess(env, tmp_path / f"bot-{n}.log") for n in range(2)]
    try:
        answers = []
        for n in range(3):  # each to another replica: the count is shared
            slack.bot_url = f"{replicas[n % 2].url}/slack/events"
            answers.append(ask(background_loop, slack, "logs employee prod 1h"))
        assert all("the most I take" not in a for a in answers[:2])
        assert "That is 2 log queries from you in 3600s, the most I take; try again in" in answers[2]
        assert "\n" not in answers[2]
        assert len(insights.runs) == 2  # the third never reached Logs Insights
        slack.bot_url = f"{replicas[0].url}/slack/events"
        assert "recorded yet" in ask(background_loop, slack, "history employee prod")  # reading is not limited
    finally:
        for replica in replicas:
            replica.stop_soon()


def test_prod_logs_are_for_its_people_and_its_files_stay_in_its_channels(insights: InsightsStandIn, bot: BotProcess,
                                                                         slack: SlackWorkspace,
                                                                         background_loop: BackgroundLoop):
    """Issue 18 item 5: any member of any channel, a guest included, read prod's logs and got the whole
    result as a file in whatever channel they typed in."""
    def ask_as(user: str, channel: str, text: str) -> str:
        before = len(slack.ephemerals(user))
        assert background_loop.run(slack.send_command(user, channel, text))[0] == 200
        return wait_until(lambda: [m.text for m in slack.ephemerals(user)[before:]], what="the answer")[-1]

    refused = ask_as("U0GUEST", "C0GENERAL", "logs notification prod 3h")
    assert refused.startswith(":no_entry: You can't read prod's logs: only") and "\n" not in refused
    assert "<!subteam^S0ONCALL>" in refused and not insights.runs  # nothing was queried
    assert not ask_as("U0GUEST", "C0GENERAL", "logs employee dev 3h").startswith(":no_entry:")  # dev: anyone
    # a prod deployer asking in #general reads the lines, but the whole result is not shared there
    answer = ask_as("U0DEV1", "C0GENERAL", "logs notification prod 3h")
    assert "showing" in answer and "shared only in <#C0PROD> or <#C0ONCALL>" in answer
    assert not [m for m in slack.channel_messages("C0GENERAL") if m.files]


# --- formatting, on the shapes Insights returns -------------------------------------------

def test_spring_lines_are_compact_and_traces_folded():
    line = to_line({"@timestamp": "2026-11-26 03:12:45.123",
                    "@message": "2026-11-26T03:12:45.123Z ERROR 1 --- [http-nio-8080-exec-3] "
                                "c.e.erp.notify.RedisPublisher           : Redis publish failed\n\tat a.b(C.java:1)\n"
                                "\tat d.e(F.java:2)\n"})
    assert line.compact() == "03:12:45 ERROR RedisPublisher: Redis publish failed (+2 lines)"


def test_messages_fit_slack_and_lines_are_newest_first():
    rows = [{"@timestamp": str(1_700_000_000_000 + i * 1000), "@message": f"WARN something {i} " + "x" * 150}
            for i in range(500)]
    lines = to_lines(rows)
    assert lines[0].text.startswith("WARN something 499")
    text, shown = fit_for_message(lines)
    assert len(text) <= SECTION_LIMIT + 10 and 0 < shown < 500


def test_string_literals_cannot_break_out():
    assert string_literal('a"b\\c\nd') == '"a\\"b\\\\cd"'
    assert build_query(None) .endswith("like /(ERROR|WARN)/ | sort @timestamp desc | limit 1000")


def test_chart_from_insights_stats_rows():
    start = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
    rows = [{"bin(5m)": (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S.000"), "count()": str(c)}
            for i, c in enumerate([3, 0, 12, 58, 9])]
    buckets = buckets_from_rows(rows)
    assert summary(buckets) == "82 errors, peak 58 in the 5 minutes from 01:15 UTC"
    png = render_chart(buckets, "errors")
    assert png.startswith(b"\x89PNG") and len(png) < 50_000
    assert render_chart([], "none").startswith(b"\x89PNG")
