from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import ConfigError, load_config, parse_config
from tests.support import base_config

GOOD = base_config("https://sqs.ap-northeast-2.amazonaws.com/806332783810/erp-chatops-events", "erp-chatops-state")


def with_change(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


def test_good_config_loads_with_log_groups_per_environment(tmp_path: Path):
    path = tmp_path / "erp.yaml"
    path.write_text(yaml.safe_dump(GOOD, sort_keys=False))
    config = load_config(path)
    assert list(config.services) == ["employee", "approval-request", "approval-processing", "notification"]
    assert config.services["notification"].log_group_for("prod") == "/erp/prod/notification-service"
    assert config.environments["prod"].approvers == ("U0APPR1", "S0ONCALL")
    assert config.environments["dev"].deployers is None  # absent = anyone
    assert config.channel_environment("C0PROD") == "prod"


@pytest.mark.parametrize(("path", "value", "message"), [
    ("pipeline", DELETE, "pipeline: missing, expected the CodePipeline name"),
    ("surprise", 1, "surprise: unknown key, expected one of:"),
    ("environments.prod.channel", "erp-prod", "environments.prod.channel: expected a Slack channel ID such as C0PROD, got 'erp-prod'"),
    ("environments.prod.approval", "yes", "environments.prod.approval: expected true or false, got 'yes'"),
    ("environments.prod.rollback_on_alarm", "on", "environments.prod.rollback_on_alarm: expected true or false"),
    ("environments.prod.approvers", "U0AAA", "environments.prod.approvers: expected a list of Slack user or user-group IDs"),
    ("environments.prod.approvers", ["alice"], "environments.prod.approvers[0]: expected Slack user or user-group IDs"),
    ("environments.prod.approvers", [], "environments.prod.approvers: expected at least one approver when approval is true"),
    ("environments.prod.approver", ["U0AAA"], "environments.prod.approver: unknown key"),
    ("environments.dev.namespace", DELETE, "environments.dev.namespace: missing, expected a Kubernetes namespace"),
    ("environments", {}, "environments: expected a mapping of environment name to settings, got a mapping"),
    ("services.employee.log_group", DELETE, "services.employee.log_group: missing"),
    ("services.employee.deployment", "Employee Service", "services.employee.deployment: expected a Kubernetes Deployment name"),
    ("services.all", {"image_repository": "x", "log_group": "y", "deployment": "z"}, "services.all: expected a service name other than 'all'"),
    ("services", [], "services: expected a mapping of service name to settings, got a list"),
    ("oncall_channels", "C0ONCALL", "oncall_channels: expected a list of Slack channel IDs"),
    ("locks", {"default": "4d"}, "locks.default: expected at most locks.max (3d, the default), got '4d'"),
    ("locks", {"default": "3h", "max": "2h"}, "locks.default: expected at most locks.max (2h), got '3h'"),
    ("locks", {"defualt": "1h"}, "locks.defualt: unknown key, expected one of: default, max, remind_before"),
    ("locks", {"default": "soon"}, "locks.default: expected a duration such as 30m, 2h or 3d, got 'soon'"),
    ("promotion", {"from": "dev", "to": "staging"}, "promotion.to: expected one of the environments (dev, prod)"),
    ("promotion", {"from": "prod", "to": "prod"}, "promotion.to: expected another environment than promotion.from"),
    ("promotion", {"from": "dev", "to": "prod", "soak": "a while"}, "promotion.soak: expected a duration"),
    ("environments.prod.freeze", {"timezone": "Asia/Seol", "windows": [{"from": "Fri 18:00", "to": "Mon 09:00"}]},
     "environments.prod.freeze: timezone: 'Asia/Seol' is not an IANA time zone such as Asia/Seoul"),
    ("environments.prod.lock_after_rollback", "forever", "environments.prod.lock_after_rollback: expected a duration"),
])
def test_bad_config_names_file_key_and_expectation(path: str, value: Any, message: str):
    with pytest.raises(ConfigError) as err:
        parse_config(with_change(path, value), "/etc/erp-chatops/config.yaml")
    text = str(err.value)
    assert text.startswith("/etc/erp-chatops/config.yaml: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(("content", "message"), [
    ("pipeline: [unclosed", "not valid YAML at line 1"),
    ("", "(top level): expected a mapping, got nothing"),
    ("- a\n- b\n", "(top level): expected a mapping, got a list"),
])
def test_unreadable_files(tmp_path: Path, content: str, message: str):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=None) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
