"""Drift against the real API server and helm: the pipeline's record, the Helm release, the Deployments."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bot.ci.build_steps import record_deploy
from bot.cluster.helm import image_values
from handlers.drift import IGNORE_ACTION, REDEPLOY_ACTION
from sandbox.codepipeline import PipelineStandIn
from sandbox.erp_cluster import SKIP_CLIENT_SCHEMA_CHECK
from sandbox.erp_services import SERVICES
from sandbox.slack_workspace import SlackWorkspace
from tests.handlers.test_locks import gated  # noqa: F401 - the fixture: the stand-in as CodeBuild has it
from tests.handlers.test_rollback import CHART, Release, ask, install, release  # noqa: F401 - the fixture
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
        checker.stop_soon()


def test_re_deploy_via_the_pipeline_deploys_the_recorded_version_and_clears_the_drift(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop,  # noqa: F811
        aws_resources: dict[str, str], gated: PipelineStandIn, tmp_path: Path):  # noqa: F811
    """The drift message's button starts the pipeline with the recorded image (its digest, at its commit, no
    rebuild), through the same checks as `/erp deploy`; the pipeline's deploy (real helm) puts it back."""
    commit, digest = "c" * 40, "sha256:" + "e" * 64
    ns = release.namespaces["dev"]
    install(release.helm, release.kube, ns, "dev", {"employee": commit})
    release.complete_rollouts("dev")
    record_what_helm_runs(release, aws_resources["table"])
    record_deploy({"STATE_TABLE": aws_resources["table"], "PIPELINE_EXECUTION_ID": "dev-exec"}, "dev", commit,
                  ["employee"], images={"employee": f"{commit}@{digest}"})
    subprocess.run([release.helm, "upgrade", "erp", str(CHART), "-n", ns, "--kubeconfig", str(release.kube.kubeconfig),
                    "--reuse-values", *SKIP_CLIENT_SCHEMA_CHECK, *image_values("employee", f"{commit}@{digest}")], check=True, capture_output=True)

    async def helm_deploy(env: str, services: list[str], ref: str) -> None:  # the buildspec's deploy step
        args = [release.helm, "upgrade", "erp", str(CHART), "-n", release.namespaces[env], "--reuse-values",
                "--kubeconfig", str(release.kube.kubeconfig), *SKIP_CLIENT_SCHEMA_CHECK]
        for service in services:
            args += image_values(service, ref)
        subprocess.run(args, check=True, capture_output=True)
    gated.deployer = helm_deploy
    release.bot.stop()
    checker = BotProcess({**release.env, "DRIFT_CHECK_SECONDS": "1"}, tmp_path / "checker.log")
    slack.bot_url = f"{checker.url}/slack/events"
    try:
        set_image(release, "hotfix-by-hand")
        [message] = wait_until(lambda: [m for m in slack.channel_messages("C0DEV") if "Drift in dev" in m.text], 30,
                               "the drift message")
        before = set(gated.executions)
        background_loop.run(slack.click("U0DEV1", message, REDEPLOY_ACTION))
        [execution] = wait_until(lambda: [e for i, e in gated.executions.items() if i not in before], 20,
                                 "the pipeline to start")
        assert execution.variables["PROMOTE_IMAGE"] == f"employee={commit}@{digest}"
        assert execution.variables["ENVIRONMENT"] == "dev" and execution.revision == commit
        wait_until(lambda: execution.status == "Succeeded", 40, "the re-deploy to succeed")
        wait_until(lambda: "cleared" in message.text, 30, "the drift message to say it cleared")
        # the card says what it is: the recorded image, asked from the drift, by whom
        assert [m for m in slack.channel_messages("C0DEV") if "Re-deploy of the recorded" in json.dumps(m.blocks)
                and "<@U0DEV1>" in json.dumps(m.blocks)]
    finally:
        checker.stop_soon()
