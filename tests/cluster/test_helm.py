"""The helm adapter against the real helm binary and a real kube-apiserver: helm never outlives its caller."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bot.cluster.helm import Helm, HelmError
from sandbox.local_kube import LocalKube

CHART = """apiVersion: v2
name: blocker
version: 0.1.0
"""
DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: blocker}
spec:
  replicas: 1
  selector: {matchLabels: {app: blocker}}
  template:
    metadata: {labels: {app: blocker}}
    spec: {containers: [{name: c, image: "example.invalid/never:1"}]}
"""


def helm_processes(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(marker.encode() in part for part in cmdline) and cmdline[0].endswith(b"helm"):
            found.append(int(pid))
    return found


async def test_a_cancelled_helm_is_stopped_and_a_release_it_left_pending_is_reported(
        helm: str, kube: LocalKube, tmp_path: Path):
    chart = tmp_path / "blocker"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(CHART)
    (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    namespace = f"helm-{os.getpid()}"
    adapter = Helm(helm, kubeconfig=str(kube.kubeconfig))
    # --wait on a Deployment that can never become ready (this cluster runs no kubelet): helm blocks
    run = asyncio.ensure_future(adapter.run("upgrade", "--install", "blocker", str(chart), "-n", namespace,
                                            "--create-namespace", "--wait", "--timeout", "5m"))
    for _ in range(100):
        await asyncio.sleep(0.1)
        if helm_processes(namespace):
            break
    await asyncio.sleep(2)
    assert helm_processes(namespace), "helm did not start"
    run.cancel()  # the bot shutting down, say
    try:
        await run
    except asyncio.CancelledError:
        pass
    assert helm_processes(namespace) == []  # stopped with us, not left running against the cluster
    stuck = await adapter.stuck("blocker", namespace)
    history = await adapter.history("blocker", namespace)
    # helm recorded the interruption itself (failed), or the adapter reports the pending-* release
    assert history and (history[-1].status == "failed" or (stuck is not None and stuck.number == history[-1].number))


async def test_helm_gets_no_secret_from_the_bots_environment(monkeypatch):  # type: ignore[no-untyped-def]
    """Issue 18 item 12: helm ran with the bot's whole environment, Slack token and AWS keys included.
    `printenv` in helm's place shows exactly what a child the adapter starts receives."""
    secrets = {"SLACK_BOT_TOKEN": "xoxb-not-for-helm", "SLACK_SIGNING_SECRET": "signing-not-for-helm",
               "AWS_ACCESS_KEY_ID": "AKIANOTFORHELM", "AWS_SECRET_ACCESS_KEY": "secret-not-for-helm",
               "AWS_SESSION_TOKEN": "session-not-for-helm"}
    for name, value in {**secrets, "KUBECONFIG": "/etc/erp/kubeconfig", "AWS_REGION": "ap-northeast-2"}.items():
        monkeypatch.setenv(name, value)
    seen = await Helm("/usr/bin/printenv").run()
    assert not [value for value in secrets.values() if value in seen], seen
    assert "KUBECONFIG=/etc/erp/kubeconfig" in seen and "AWS_REGION=ap-northeast-2" in seen


async def test_helms_error_reaches_slack_as_its_one_error_line(helm: str, tmp_path: Path):
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                           "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
                           "users: [{name: u, user: {token: t}}]\n")
    try:
        await Helm(helm, kubeconfig=str(unreachable)).history("erp", "erp-dev")
    except HelmError as e:
        said = str(e)
    else:
        raise AssertionError("helm reached a cluster that is not there")
    assert said.startswith("Error:") and "\n" not in said and len(said) <= 300 and "127.0.0.1:9" in said
