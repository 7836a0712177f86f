"""Drift against the real API server and helm: the pipeline's record, the Helm release, the Deployments."""

from __future__ import annotations

import time
from pathlib import Path

from bot.ci.build_steps import record_deploy
from handlers.drift import IGNORE_ACTION
from sandbox.erp_services import SERVICES
from sandbox.slack_workspace import SlackWorkspace
from tests.handlers.test_rollback import Release, ask, install, release  # noqa: F401 - the fixture
from tests.support import BackgroundLoop, BotProcess, wait_until


def record_what_helm_runs(release: Release, table: str) -> None:  # noqa: F811
    """As the pipeline recorded its last deploys: what the release runs now."""
    for service, tag in release.tags("dev").items():
        record_deploy({"STATE_TABLE": table, "PIPELINE_EXECUTION_ID": "dev-exec"}, "dev", "a" * 40, [service],
                      images={service: tag})


def patch(release: Release, deployment: str, body: dict) -> None:  # noqa: F811
    ns = release.namespaces["dev"]
    status, answer = release.kube.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}", body,
                                          content_type="application/strategic-merge-patch+json")
    assert status == 200, answer


def set_image(release: Release, tag: str) -> None:  # noqa: F811
    patch(release, "employee-service", {"spec": {"template": {"spec": {"containers": [
        {"name": "employee", "image": f"806332783810.dkr.ecr.ap-northeast-2.amazonaws.com/erp/employee-service:{tag}"}]}}}})


def test_drift_finds_a_direct_patch_not_what_an_hpa_scaled_and_a_redeploy_clears_it(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop,  # noqa: F811
        aws_resources: dict[str, str]):
    record_what_helm_runs(release, aws_resources["table"])
    assert "*dev*: no drift" in ask(background_loop, slack, "U0DEV1", "drift dev", "C0DEV")
    patch(release, "employee-service", {"spec": {"replicas": 7}})  # the HPA's doing: not drift
    assert "*dev*: no drift" in ask(background_loop, slack, "U0DEV1", "drift dev", "C0DEV")
    set_image(release, "hotfix-by-hand")
    found = ask(background_loop, slack, "U0DEV1", "drift dev", "C0DEV")
    assert "employee: image changed outside Helm" in found and "hotfix-by-hand" in found
    # a hand-run helm upgrade: the release no longer matches the pipeline's last deploy
    install(release.helm, release.kube, release.namespaces["dev"], "dev", {"notification": "v9.9.9"})
    found = ask(background_loop, slack, "U0DEV1", "drift dev", "C0DEV")
    assert "notification: the release differs from the last pipeline deploy: `v1.2.0` → `v9.9.9`" in found
    # re-deploying through the pipeline (helm, then its record) clears both
    install(release.helm, release.kube, release.namespaces["dev"], "dev", {"employee": "v1.3.0"})
    record_what_helm_runs(release, aws_resources["table"])
    assert "*dev*: no drift" in ask(background_loop, slack, "U0DEV1", "drift dev", "C0DEV")


def test_the_periodic_check_posts_each_drift_once_edits_it_and_says_when_it_clears(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop,  # noqa: F811
        aws_resources: dict[str, str], tmp_path: Path):
    record_what_helm_runs(release, aws_resources["table"])
    release.bot.stop()
    checker = BotProcess({**release.env, "DRIFT_CHECK_SECONDS": "1"}, tmp_path / "checker.log")
    slack.bot_url = f"{checker.url}/slack/events"
    try:
        set_image(release, "hotfix-1")

        def drift_messages() -> list:
            return [m for m in slack.channel_messages("C0DEV") if "Drift in dev" in m.text]
        [message] = wait_until(drift_messages, 30, "the drift message")
        assert "employee: image changed outside Helm" in message.text and "hotfix-1" in message.text
        time.sleep(2.5)
        assert len(drift_messages()) == 1  # never repeated
        set_image(release, "hotfix-2")
        wait_until(lambda: "hotfix-2" in message.text, 30, "the message edited as the drift changes")
        assert len(drift_messages()) == 1
        background_loop.run(slack.click("U0DEV1", message, IGNORE_ACTION))
        wait_until(lambda: "ignored by <@U0DEV1>" in message.text, 20, "the drift ignored for 24h")
        install(release.helm, release.kube, release.namespaces["dev"], "dev", {s: "v1.4.0" for s in SERVICES})
        record_what_helm_runs(release, aws_resources["table"])
        wait_until(lambda: "cleared" in message.text, 30, "the message to say the drift cleared")
    finally:
        checker.stop()
