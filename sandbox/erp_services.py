"""The ERP services the sandbox stands in for: the bot's own declared list, never a copy.

It is the `config` of the bot's chart (charts/erp-chatops/values.yaml), the config the bot runs with in
the cluster; tests/test_service_list.py holds every other file that names the services to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

BOT_VALUES = Path(__file__).resolve().parents[1] / "charts" / "erp-chatops" / "values.yaml"


def declared_config() -> dict[str, Any]:
    """The bot's config as deployed (the chart's `config`)."""
    return dict(yaml.safe_load(BOT_VALUES.read_text(encoding="utf-8"))["config"])


_SERVICES: dict[str, dict[str, str]] = declared_config()["services"]
SERVICES: tuple[str, ...] = tuple(_SERVICES)


def repository_of(service: str) -> str:
    """The service's ECR repository, e.g. erp/employee-service."""
    return _SERVICES[service]["image_repository"]


def log_group_of(service: str, env: str) -> str:
    """The service's CloudWatch Logs group in an environment, e.g. /erp/prod/employee-service."""
    return _SERVICES[service]["log_group"].replace("{env}", env)
