"""What `erp-chatops ci deploy` records, whatever stops it (moto's DynamoDB; `/erp promote` reads these)."""

from __future__ import annotations

import boto3
import pytest

from bot import __main__ as cli
from bot.ci import build_steps


def attempt(table: str, env: str, service: str) -> dict[str, object]:
    item = boto3.client("dynamodb").get_item(TableName=table, Key={
        "pk": {"S": f"LASTDEPLOY#{env}"}, "sk": {"S": f"ATTEMPT#{service}"}}).get("Item", {})
    return {k: next(iter(v.values())) for k, v in item.items()}


def test_a_deploy_that_crashes_after_helm_ran_is_recorded_as_a_failed_attempt(
        aws_resources: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Review finding: helm ran, then the rollout wait raised (no kubeconfig, a timeout): nothing was recorded,
    so `/erp promote` still took dev's previous image as its last good deploy, and a stack trace ended it."""
    table = aws_resources["table"]
    monkeypatch.setenv("STATE_TABLE", table)
    monkeypatch.setenv("PIPELINE_EXECUTION_ID", "exec-crash")
    monkeypatch.delenv("PROGRESS_QUEUE_URL", raising=False)
    digest = "sha256:" + "e" * 64
    build_steps.record_deploy({"STATE_TABLE": table, "PIPELINE_EXECUTION_ID": "exec-ok"}, "dev", "a" * 40,
                              ["employee"], images={"employee": f"{'a' * 40}@{digest}"})
    monkeypatch.setattr(build_steps, "deploy_gate", lambda environ, environment: None)

    def crash(*args: object, **kwargs: object) -> build_steps.DeployResult:
        raise TimeoutError("helm upgrade did not return within 900s")
    monkeypatch.setattr(build_steps, "deploy", crash)
    rc = cli.main(["ci", "deploy", "--release", "erp", "--chart", "charts/erp", "--namespace", "erp-dev",
                   "--environment", "dev", "--image-tags", f"employee={'b' * 40}@{digest}", "--commit", "b" * 40])
    assert rc == 1
    assert "the deploy stopped: TimeoutError: helm upgrade did not return" in capsys.readouterr().err
    recorded = attempt(table, "dev", "employee")
    assert recorded["ok"] is False and recorded["execution"] == "exec-crash"
