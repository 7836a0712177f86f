from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.config import parse_config
from bot.delivery.command_parser import CommandParser, ErpCommand, UsageError
from tests.support import base_config

PARSER = CommandParser(parse_config(base_config("q", "t"), "test.yaml"))


@pytest.mark.parametrize(("text", "expected"), [
    ("", ErpCommand(verb="help")),
    ("help", ErpCommand(verb="help")),
    ("HELP Logs", ErpCommand(verb="help", topic="logs")),
    ("deploy employee prod", ErpCommand(verb="deploy", service="employee", environment="prod")),
    ("deploy all dev", ErpCommand(verb="deploy", service="all", environment="dev")),
    ("deploy dev", ErpCommand(verb="deploy", environment="dev")),
    ("  deploy   Employee   PROD ", ErpCommand(verb="deploy", service="employee", environment="prod")),
    ("rollback employee prod", ErpCommand(verb="rollback", service="employee", environment="prod")),
    ("rollback employee prod 12", ErpCommand(verb="rollback", service="employee", environment="prod", revision=12)),
    ("rollback prod 12", ErpCommand(verb="rollback", environment="prod", revision=12)),
    ("logs notification", ErpCommand(verb="logs", service="notification")),
    ("logs notification prod stats", ErpCommand(verb="logs", service="notification", environment="prod", stats=True)),
    ("logs employee stats", ErpCommand(verb="logs", service="employee", stats=True)),
    ("logs notification prod ERROR", ErpCommand(verb="logs", service="notification", environment="prod",
                                                filter="ERROR")),
    ("scan employee", ErpCommand(verb="scan", service="employee")),
    ("scan employee latest", ErpCommand(verb="scan", service="employee")),
    ("scan employee 3f9c2e1", ErpCommand(verb="scan", service="employee", tag="3f9c2e1")),
    ("status", ErpCommand(verb="status")),
    ("status prod", ErpCommand(verb="status", environment="prod")),
    ("history", ErpCommand(verb="history")),
    ("history prod employee", ErpCommand(verb="history", service="employee", environment="prod")),
])
def test_valid_commands(text: str, expected: ErpCommand):
    assert PARSER.parse(text) == expected


def test_logs_with_window_and_quoted_filter():
    cmd = PARSER.parse('logs employee prod 2h "timeout after 30s"')
    assert (cmd.service, cmd.environment, cmd.filter) == ("employee", "prod", "timeout after 30s")
    assert cmd.since is not None and cmd.since.lookback == timedelta(hours=2)


def test_phone_quotes_and_slack_escapes_are_understood():
    cmd = PARSER.parse("logs employee prod 30m \u201cconnection reset\u201d")
    assert cmd.filter == "connection reset" and cmd.since is not None and cmd.since.lookback == timedelta(minutes=30)
    assert PARSER.parse("logs employee a &amp; b").filter == "a & b"


def test_iso_time_window():
    cmd = PARSER.parse("logs employee prod 2026-01-02T03:04Z")
    assert cmd.since is not None and cmd.since.start == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize(("text", "message"), [
    ("deplyo employee prod", "Unknown command `deplyo`: did you mean `/erp deploy`?"),
    ("frobnicate", "Unknown command `frobnicate`: type `/erp help` to see them."),
    ("deploy", "Say what to deploy and where. Usage: `/erp deploy"),
    ("deploy employe prod", "Unknown service `employe`: did you mean `employee`?"),
    ("deploy employee prdo", "Unknown environment `prdo`: did you mean `prod`?"),
    ("deploy employee", "Say where to deploy `employee`: `/erp deploy employee <dev|prod>`."),
    ("deploy prdo", "Unknown service or environment `prdo`: did you mean `prod`?"),
    ("deploy employee prod now", "Unexpected `now`."),
    ("deploy employee; rm -rf / prod", "Unknown service `employee;`: did you mean `employee`?"),
    ("deploy $(id) prod", "Unknown service `$(id)`"),
    ("deploy `id` prod", "Unknown service `'id'`"),
    ("rollback prod", "A whole-release rollback needs the revision: `/erp rollback prod <revision>`."),
    ("rollback employee", "Say where to roll back `employee`"),
    ("rollback employee prod latest", "Revision `latest` is not a Helm revision number"),
    ("rollback employee prod -1", "Revision `-1` is not a Helm revision number"),
    ("logs", "Say which service's logs."),
    ("logs notifcation", "Unknown service `notifcation`: did you mean `notification`?"),
    ("logs notification prdo", "Unknown environment `prdo`: did you mean `prod`?"),
    ("logs notification prod 15x", "Cannot read the time window `15x`: use 15m, 2h, 1d or an ISO time"),
    ("logs notification prod 90d", "Time window `90d` must be between 1s and 30d."),
    ("logs notification prod 0m", "Time window `0m` must be between 1s and 30d."),
    ("logs notification prod 2999-01-01T00:00Z", "is in the future"),
    ('logs notification prod "unclosed', "A quote is not closed"),
    ("logs notification prod stats extra", "Unexpected `extra`."),
    ("logs notification " + "x" * 300, "keep it under 200"),
    ("scan", "Say which service's image to scan."),
    ("scan employee ../../etc", "is not an image tag or sha256 digest"),
    ("status staging", "Unknown environment `staging`: choose one of: `dev`, `prod`."),
    ("history prod prod", "Unknown service or environment `prod`"),
    ("help delpoy", "Unknown command `delpoy`: did you mean `deploy`?"),
])
def test_mistakes_say_what_to_type(text: str, message: str):
    with pytest.raises(UsageError) as err:
        PARSER.parse(text)
    assert message in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ('lock prod for 2h "INC-42 payments"', ErpCommand(verb="lock", environment="prod", duration=7200,
                                                      reason="INC-42 payments")),
    ("lock dev 30m", ErpCommand(verb="lock", environment="dev", duration=1800)),
    ("lock dev migrating", ErpCommand(verb="lock", environment="dev", reason="migrating")),
    ("unlock prod", ErpCommand(verb="unlock", environment="prod")),
    ("promote", ErpCommand(verb="promote")),
    ("promote employee to prod", ErpCommand(verb="promote", service="employee", environment="prod")),
    ('promote employee override "soaked by hand"', ErpCommand(verb="promote", service="employee",
                                                             environment="prod", override="soaked by hand")),
    # an image still inside its soak time during a freeze: an approver gives both reasons, in either order
    ('promote employee override "verified by QA" break-glass "INC-42 fix"', ErpCommand(
        verb="promote", service="employee", environment="prod", override="verified by QA", break_glass="INC-42 fix")),
    ("promote employee break-glass INC-42 override verified", ErpCommand(
        verb="promote", service="employee", environment="prod", override="verified", break_glass="INC-42")),
    # unquoted words that happen to be the other keyword stay in the reason
    ("promote employee break-glass customers cannot override their address", ErpCommand(
        verb="promote", service="employee", environment="prod",
        break_glass="customers cannot override their address")),
])
def test_locks_and_promotions_parse(text: str, expected: ErpCommand):
    assert PARSER.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("lock", "Say which environment to lock."),
    ("lock prod for ever", "`for ever` is not a duration: say `for 30m`, `for 2h` or `for 1d`."),
    ("lock prod for 30d", "A lock lasts at most"),
    ("promote employee override", "`override` needs a reason"),
    ("promote employee override a break-glass", "`break-glass` needs a reason"),
    ("promote employee override a override b", "Say `override` once"),
    ("promote employee to dev", "Promotion goes from dev to prod"),
])
def test_lock_and_promote_mistakes_say_what_to_type(text: str, message: str):
    with pytest.raises(UsageError) as err:
        PARSER.parse(text)
    assert message in err.value.message and "\n" not in err.value.message
