"""Rollbacks and cluster state against a real kube-apiserver with the real helm.

No kubelet or controllers run: the tests play the Deployment controller through
the status subresource to make rollouts progress, complete or fail."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from bot.aws.clients import AwsClients
from bot.cluster.helm import revision_description
from bot.delivery.deploy_card import DeployCard
from bot.slack.deploy_card_blocks import ROLLBACK_ACTION, render_card
from handlers.rollback import CANCEL_ACTION, CONFIRM_ACTION
from sandbox.alarms import set_alarm
from sandbox.erp_cluster import SKIP_CLIENT_SCHEMA_CHECK
from sandbox.erp_services import SERVICES
from sandbox.local_kube import LocalKube
from sandbox.slack_workspace import Fault, Message, SlackWorkspace
from tests.support import ROOT, BackgroundLoop, BotProcess, base_config, wait_until, write_config

CHART = ROOT / "charts" / "erp"


@dataclass
class Release:
    namespaces: dict[str, str]  # env -> namespace
    bot: BotProcess
    kube: LocalKube
    helm: str
    env: dict[str, str]  # what the bot was started with

    def helm_values(self, env: str) -> dict:
        out = subprocess.run([self.helm, "get", "values", "erp", "-n", self.namespaces[env], "-o", "json", "--all",
                              "--kubeconfig", str(self.kube.kubeconfig)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def tags(self, env: str) -> dict[str, str]:
        return {k: v["image"]["tag"] for k, v in self.helm_values(env)["services"].items()}

    def images(self, env: str) -> dict[str, str]:
        """The tag each Deployment in the API server runs now."""
        _, listing = self.kube.request("GET", f"/apis/apps/v1/namespaces/{self.namespaces[env]}/deployments")
        return {d["metadata"]["name"].removesuffix("-service"):
                d["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1] for d in listing["items"]}

    def wait_images(self, env: str, timeout: float = 20, **expected: str) -> None:
        """helm records a release before it patches the Deployments: wait for the patches themselves."""
        wanted = {k.replace("_", "-"): v for k, v in expected.items()}
        wait_until(lambda: all(self.images(env).get(k) == v for k, v in wanted.items()), timeout,
                   what=f"images {wanted}")

    def complete_rollouts(self, env: str) -> None:
        for s in SERVICES:
            self.kube.set_rollout(self.namespaces[env], f"{s}-service")


def install(helm: str, kube: LocalKube, namespace: str, env: str, tags: dict[str, str], first: bool = False,
            execution: str | None = None) -> None:
    """As the buildspec deploys: the environment's values first, then only the tags that changed; a
    pipeline's deploy writes its execution on the revision (`erp-chatops ci deploy`)."""
    args = [helm, "upgrade", "--install", "erp", str(CHART), "-n", namespace, "--kubeconfig", str(kube.kubeconfig),
            *SKIP_CLIENT_SCHEMA_CHECK]
    args += ["-f", str(CHART / f"values-{env}.yaml")] if first else ["--reuse-values"]
    if execution is not None:
        args += ["--description", revision_description(execution)]
    for service, tag in tags.items():
        args += ["--set-string", f"services.{service}.image.tag={tag}"]
    subprocess.run(args, capture_output=True, text=True, check=True)


@pytest.fixture
def release(kube: LocalKube, helm: str, bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path,
            aws_resources: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Release]:
    """charts/erp installed three times in a fresh dev namespace (and prod's, for a test marked
    prod_release: six helm upgrades, not three), and a bot pointed at them."""
    suffix = uuid.uuid4().hex[:6]
    namespaces = {"dev": f"erp-dev-{suffix}", "prod": f"erp-prod-{suffix}"}  # prod's made only when installed
    installed = {env: ns for env, ns in namespaces.items()
                 if env == "dev" or request.node.get_closest_marker("prod_release") is not None}
    config = base_config(aws_resources["queue_url"], aws_resources["table"])
    config["environments"]["dev"]["lock_after_rollback"] = "1h"  # issue 19: nobody redeploys the bad version
    config["environments"]["dev"]["rollback_on_alarm"] = True  # issue 20: an alarm soon after a deploy undoes it

    def three_revisions(env: str, ns: str) -> None:
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        install(helm, kube, ns, env, {s: "v1.0.0" for s in SERVICES}, first=True)           # revision 1
        install(helm, kube, ns, env, {s: "v1.1.0" for s in SERVICES})                       # revision 2
        install(helm, kube, ns, env, {"employee": "v1.2.0", "notification": "v1.2.0"})      # revision 3
        kube.autoscale(ns)  # the HPAs bring each Deployment to its minimum (the chart leaves replicas to them)
        for s in SERVICES:
            kube.set_rollout(ns, f"{s}-service")

    for env, ns in namespaces.items():
        config["environments"][env]["namespace"] = ns
    with ThreadPoolExecutor(len(installed)) as pool:  # two namespaces apart: installed side by side
        list(pool.map(three_revisions, installed, installed.values()))
    env = {**bot_env, "BOT_CONFIG": str(write_config(tmp_path / "kube-config.yaml", config)),
           "KUBECONFIG": str(kube.kubeconfig), "HELM_BIN": helm, "ROLLOUT_TIMEOUT_SECONDS": "15"}
    bot = BotProcess(env, tmp_path / "bot.log")
    slack.bot_url = f"{bot.url}/slack/events"
    yield Release(namespaces, bot, kube, helm, env)
    bot.stop_soon()


def ask(loop: BackgroundLoop, slack: SlackWorkspace, user: str, text: str, channel: str = "C0ONCALL") -> str:
    before = len(slack.ephemerals(user))
    assert loop.run(slack.send_command(user, channel, text))[0] == 200
    return wait_until(lambda: [m.text for m in slack.ephemerals(user)[before:]],
                      timeout=30, what="the answer")[-1]


def plan_message(slack: SlackWorkspace, channel: str) -> Message:
    return wait_until(lambda: [m for m in slack.channel_messages(channel) if "Roll back" in json.dumps(m.blocks)],
                      what="the rollback plan")[-1]


def shown(message: Message) -> str:
    return json.dumps(message.blocks)


@pytest.mark.prod_release
def test_status_shows_the_truth_of_the_cluster(release: Release, slack: SlackWorkspace,
                                               background_loop: BackgroundLoop):
    ns = release.namespaces["prod"]
    release.kube.set_rollout(ns, "notification-service", ready=1)
    release.kube.set_rollout(ns, "approval-processing-service", failed_reason="ReplicaSet has timed out progressing.")
    text = ask(background_loop, slack, "U0ONCALL", "status prod")
    assert f"*prod* (`{ns}`)" in text and "revision *3*" in text
    assert ":large_green_circle: employee `v1.2.0` 5/5 complete" in text
    assert ":large_yellow_circle: notification `v1.2.0` 1/3 progressing" in text
    assert ":red_circle: approval-processing `v1.1.0` 2/2 failed (ProgressDeadlineExceeded)" in text
    assert "\n" in text and text.count("\n") <= 6  # one compact message: a line per service


@pytest.mark.prod_release
def test_history_lists_helm_revisions_with_tags(release: Release, slack: SlackWorkspace,
                                               background_loop: BackgroundLoop):
    text = ask(background_loop, slack, "U0ONCALL", "history employee prod")
    assert "Helm release `erp`" in text
    revs = [line for line in text.splitlines() if line.startswith("rev *")]
    assert [r.split("*")[1] for r in revs] == ["3", "2", "1"]
    assert "employee `v1.2.0`" in revs[0] and "employee `v1.0.0`" in revs[2] and "notification" not in revs[0]


def test_service_rollback_in_dev_changes_that_service_only_and_follows_the_rollout(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop, aws_resources: dict[str, str]):
    from bot.ci.build_steps import record_deploy
    # as the pipeline recorded revision 3 (`erp-chatops ci deploy`)
    record_deploy({"STATE_TABLE": aws_resources["table"], "PIPELINE_EXECUTION_ID": "dev-exec"}, "dev", "a" * 40,
                  ["employee"], images={"employee": f"v1.2.0@sha256:{'d' * 64}"})
    answer = ask(background_loop, slack, "U0DEV1", "rollback employee dev", channel="C0DEV")
    assert "confirm it there" in answer
    plan = plan_message(slack, "C0DEV")
    assert "`v1.2.0` -> `v1.1.0`" in shown(plan) and "Revision 3 -> 2" in shown(plan)
    before = release.tags("dev")
    background_loop.run(slack.click("U0DEV1", plan, CONFIRM_ACTION))
    # helm ran: a new revision with employee on the old tag, every other service as it was
    release.wait_images("dev", employee="v1.1.0")
    after = release.tags("dev")
    assert {k: v for k, v in after.items() if k != "employee"} == {k: v for k, v in before.items() if k != "employee"}
    ns = release.namespaces["dev"]
    wait_until(lambda: "rolling out" in shown(plan_message(slack, "C0DEV")), what="the rollout to be watched")
    release.kube.set_rollout(ns, "employee-service", ready=1)
    wait_until(lambda: "1/2 progressing" in shown(plan_message(slack, "C0DEV")), what="progress")
    release.kube.set_rollout(ns, "employee-service")
    final = wait_until(lambda: "Rolled back" in shown(plan_message(slack, "C0DEV")) and plan_message(slack, "C0DEV"),
                       what="the result")
    assert "2/2 complete" in shown(final) and CONFIRM_ACTION not in shown(final)
    text = ask(background_loop, slack, "U0DEV1", "history employee dev", channel="C0DEV")
    assert "<@U0DEV1> rolled back employee in dev" in text
    # dev locks itself after a rollback (its `lock_after_rollback`), for the one who rolled back, and says so
    wait_until(lambda: any("dev is locked for <@U0DEV1>" in m.text for m in slack.thread("C0DEV", final.ts)),
               what="the lock note in the plan's thread")
    status = ask(background_loop, slack, "U0DEV1", "status dev", channel="C0DEV")
    assert ':lock: dev is locked by <@U0DEV1>' in status and 'rolled back employee' in status
    refused = ask(background_loop, slack, "U0ONCALL", "deploy employee dev", channel="C0DEV")
    assert refused.startswith(":lock: dev is locked by <@U0DEV1>")
    # and what dev ran before the rollback is no longer what dev runs: it is not promoted
    promote = ask(background_loop, slack, "U0APPR1", 'promote employee override "hotfix"', channel="C0PROD")
    assert "dev's last deploy of employee was rolled back (revision 3 -> 2)" in promote


@pytest.mark.prod_release
def test_prod_rollback_needs_an_approver_who_did_not_ask(release: Release, slack: SlackWorkspace,
                                                        background_loop: BackgroundLoop):
    # prod is locked (an incident is when people lock): rollbacks stay possible
    assert "prod is locked by <@U0DEV1>" in ask(background_loop, slack, "U0DEV1", "lock prod INC-9")
    refused = ask(background_loop, slack, "U0ONCALL", "rollback notification prod")
    assert "You can't roll back prod" in refused  # on-call is not a prod deployer here
    answer = ask(background_loop, slack, "U0APPR1", "rollback notification prod")
    assert "an approver must confirm" in answer
    plan = plan_message(slack, "C0PROD")
    background_loop.run(slack.click("U0APPR1", plan, CONFIRM_ACTION))  # the one who asked
    wait_until(lambda: any("You asked for this rollback" in m.text for m in slack.ephemerals("U0APPR1")),
               what="the refusal")
    assert release.tags("prod")["notification"] == "v1.2.0"
    background_loop.run(slack.click("U0ONCALL", plan, CONFIRM_ACTION))  # an approver (S0ONCALL)
    release.wait_images("prod", notification="v1.1.0")
    release.complete_rollouts("prod")
    wait_until(lambda: "Rolled back" in shown(plan_message(slack, "C0PROD")), what="the result")
    history = ask(background_loop, slack, "U0APPR1", "history notification prod")
    assert "<@U0ONCALL> tried to roll back notification in prod: refused" in history  # each refusal is audited
    assert "<@U0APPR1> tried to roll back notification in prod: refused (You asked for this rollback" in history


def test_whole_release_rollback_and_bad_revisions(release: Release, slack: SlackWorkspace,
                                                  background_loop: BackgroundLoop):
    assert "Revision 9 is not in `erp`'s history" in ask(background_loop, slack, "U0DEV1", "rollback dev 9", "C0DEV")
    assert "is what dev runs now" in ask(background_loop, slack, "U0DEV1", "rollback dev 3", "C0DEV")
    ask(background_loop, slack, "U0DEV1", "rollback dev 1", "C0DEV")
    plan = plan_message(slack, "C0DEV")
    assert "helm rollback" in shown(plan) and "`v1.2.0` -> `v1.0.0`" in shown(plan)
    background_loop.run(slack.click("U0DEV1", plan, CONFIRM_ACTION))
    release.wait_images("dev", **{s.replace("-", "_"): "v1.0.0" for s in SERVICES})
    release.complete_rollouts("dev")
    wait_until(lambda: "Rolled back" in shown(plan_message(slack, "C0DEV")), what="the result")


def test_helm_failure_is_surfaced_in_the_thread(release: Release, slack: SlackWorkspace,
                                                background_loop: BackgroundLoop):
    ask(background_loop, slack, "U0DEV1", "rollback employee dev", "C0DEV")
    plan = plan_message(slack, "C0DEV")
    # helm renders fine but may not write: the namespace's quota allows no new ConfigMap (helm's release record)
    ns = release.namespaces["dev"]
    release.kube.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {
        "name": "no-more-records", "namespace": ns}, "spec": {"hard": {"count/configmaps": "0"}}})
    # what the quota controller would record (none runs here): the admission plugin enforces the status
    status, body = release.kube.request("PATCH", f"/api/v1/namespaces/{ns}/resourcequotas/no-more-records/status",
                                        {"status": {"hard": {"count/configmaps": "0"},
                                                    "used": {"count/configmaps": "3"}}},
                                        content_type="application/merge-patch+json")
    assert status == 200, body
    background_loop.run(slack.click("U0DEV1", plan, CONFIRM_ACTION))
    wait_until(lambda: "helm failed" in shown(plan_message(slack, "C0DEV")), what="the failure")
    note = wait_until(lambda: slack.thread("C0DEV", plan.ts), what="helm's message")[0].text
    assert note.startswith("helm said:") and "quota" in note
    assert release.tags("dev")["employee"] == "v1.2.0"


def failed_deploy_card(slack: SlackWorkspace, service: str, env: str, execution: str) -> Message:
    """A deploy card whose Deploy stage failed, as the bot renders it."""
    card = DeployCard(execution_id=execution, pipeline="erp-dev-ChatOps", environment=env, service=service,
                      channel="C0DEV", requested_by="U0DEV1", status="Failed",
                      failure={"stage": "Deploy", "summary": "rollout did not complete"})
    text, blocks = render_card(card)
    posted = slack.m_chat_postMessage({"channel": "C0DEV", "text": text, "blocks": blocks})
    return next(m for m in slack.channel_messages("C0DEV") if m.ts == posted["ts"])


def test_the_cards_roll_back_button_goes_back_to_what_ran_before_its_execution_if_still_needed(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop):
    """Issue 17 item 6: it proposed rolling forward to the failed image after the buildspec had rolled back."""
    ns, helm, kube = release.namespaces["dev"], release.helm, release.kube

    def click(card: Message) -> str:
        before = len(slack.ephemerals("U0DEV1"))
        background_loop.run(slack.click("U0DEV1", card, ROLLBACK_ACTION))
        return wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1")[before:]], what="the answer")[-1]

    def plans() -> list[Message]:
        return [m for m in slack.channel_messages("C0DEV") if "Roll back" in shown(m) and "rollback_confirm" in shown(m)]

    # a deploy that failed, and that the buildspec rolled back: revision 4 (bad), then 5 = "Rollback to 3"
    rolled_back = str(uuid.uuid4())
    install(helm, kube, ns, "dev", {"employee": "v2.0.0"}, execution=rolled_back)
    subprocess.run([helm, "rollback", "erp", "3", "-n", ns, "--kubeconfig", str(kube.kubeconfig)], check=True,
                   capture_output=True)
    answer = click(failed_deploy_card(slack, "employee", "dev", rolled_back))
    assert "automatic rollback already put back employee `v1.2.0`" in answer and "revision 5" in answer
    assert plans() == []

    # a deploy that failed and stayed: back to what ran before it (revision 5's v1.2.0), never forward
    stayed = str(uuid.uuid4())
    install(helm, kube, ns, "dev", {"employee": "v3.0.0"}, execution=stayed)
    assert "confirm it there" in click(failed_deploy_card(slack, "employee", "dev", stayed))
    [plan] = plans()
    assert "`v3.0.0` -> `v1.2.0`" in shown(plan) and "Revision 6 -> 5" in shown(plan)

    # a push that deployed two services: the whole release goes back, with helm's stored chart
    pushed = str(uuid.uuid4())
    install(helm, kube, ns, "dev", {"notification": "v4.0.0", "approval-request": "v4.0.0"}, execution=pushed)
    assert "confirm it there" in click(failed_deploy_card(slack, "changed", "dev", pushed))
    whole = plans()[-1]
    assert "helm rollback" in shown(whole) and "Revision 7 -> 6" in shown(whole)
    assert "*notification*: `v4.0.0` -> `v1.2.0`" in shown(whole)

    # an execution that never reached the cluster (its build failed): nothing to roll back
    assert "changed nothing in dev" in click(failed_deploy_card(slack, "employee", "dev", str(uuid.uuid4())))
    assert release.tags("dev")["employee"] == "v3.0.0" and len(plans()) == 2

    # helm's upgrade failed midway (the API server refused one object): helm marks the revision failed and
    # drops its description, and what runs is part old, part new; the plan re-applies revision 7 whole
    halfway = str(uuid.uuid4())
    out = subprocess.run([helm, "upgrade", "erp", str(CHART), "-n", ns, "--kubeconfig", str(kube.kubeconfig),
                          "--reuse-values", "--set-string", "services.employee.image.tag=v5.0.0",
                          "--set-string", "services.notification.resources.limits.memory=-1Gi",
                          "--description", revision_description(halfway)], capture_output=True, text=True)
    assert out.returncode != 0, out.stdout
    assert "confirm it there" in click(failed_deploy_card(slack, "employee", "dev", halfway))
    whole_again = plans()[-1]
    assert "helm rollback" in shown(whole_again) and "Revision 8 -> 7" in shown(whole_again)


def test_a_plan_confirmed_after_the_release_moved_on_is_refused_and_made_afresh(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop):
    """Issue 17 item 7: a plan waits up to an hour; confirming it must not act on a release that changed."""
    ask(background_loop, slack, "U0DEV1", "rollback employee dev", "C0DEV")
    plan = plan_message(slack, "C0DEV")
    assert "`v1.2.0` -> `v1.1.0`" in shown(plan) and "Revision 3 -> 2" in shown(plan)
    install(release.helm, release.kube, release.namespaces["dev"], "dev", {"employee": "v1.3.0"})  # revision 4
    background_loop.run(slack.click("U0DEV1", plan, CONFIRM_ACTION))
    answer = wait_until(lambda: [m.text for m in slack.ephemerals("U0DEV1") if "Nothing was done" in m.text],
                        what="the refusal")[-1]
    assert "revision 4, not 3" in answer and "confirm it there" in answer
    stale = next(m for m in slack.channel_messages("C0DEV") if m.ts == plan.ts)
    assert "Not rolled back" in shown(stale) and CONFIRM_ACTION not in shown(stale)
    fresh = plan_message(slack, "C0DEV")  # to the same target, from what runs now
    assert fresh.ts != plan.ts and "`v1.3.0` -> `v1.1.0`" in shown(fresh) and "Revision 4 -> 2" in shown(fresh)
    assert release.tags("dev")["employee"] == "v1.3.0"


def test_a_service_rollback_that_would_rerender_other_services_is_refused(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop, tmp_path: Path):
    """Issue 17 item 10: the per-service way renders the chart copy in the bot's image; if that differs from
    the release's, the others would change too. It is refused for a whole-release rollback."""
    newer = tmp_path / "erp-chart"
    shutil.copytree(CHART, newer)
    (newer / "Chart.yaml").write_text((CHART / "Chart.yaml").read_text().replace("version: 1.0.0", "version: 1.1.0"))
    expected = {newer: ("would also change Deployment/approval-processing-service", "`/erp rollback dev 2`"),
                tmp_path / "missing": ("helm could not render the rollback of employee in dev", "not found")}
    release.bot.stop()
    for chart, words in expected.items():
        bot = BotProcess({**release.env, "ERP_CHART": str(chart)}, tmp_path / f"{chart.name}.log")
        slack.bot_url = f"{bot.url}/slack/events"
        try:
            answer = ask(background_loop, slack, "U0DEV1", "rollback employee dev", "C0DEV")
        finally:
            bot.stop()
        assert all(w in answer for w in words), answer
    assert not [m for m in slack.channel_messages("C0DEV") if CONFIRM_ACTION in shown(m)]
    assert release.tags("dev")["employee"] == "v1.2.0"


def test_cancel_and_a_plan_cannot_run_twice(release: Release, slack: SlackWorkspace,
                                            background_loop: BackgroundLoop):
    ask(background_loop, slack, "U0DEV1", "rollback employee dev", "C0DEV")
    plan = plan_message(slack, "C0DEV")
    stale = copy.deepcopy(plan)  # as a phone that has not refreshed still shows it
    background_loop.run(slack.click("U0DEV1", plan, CANCEL_ACTION))
    wait_until(lambda: "Cancelled by" in shown(plan_message(slack, "C0DEV")), what="the cancel")
    background_loop.run(slack.click("U0DEV1", stale, CONFIRM_ACTION))
    wait_until(lambda: any("already cancelled" in m.text for m in slack.ephemerals("U0DEV1")), what="the answer")
    assert release.tags("dev")["employee"] == "v1.2.0"


@pytest.mark.prod_release
def test_the_bot_works_with_its_own_least_privilege_role(release: Release, slack: SlackWorkspace,
                                                         background_loop: BackgroundLoop, tmp_path: Path):
    kube, helm = release.kube, release.helm
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "erp-chatops"}})
    values = tmp_path / "bot-values.yaml"
    values.write_text(json.dumps({"config": {"environments": {
        env: {"namespace": ns, "release": "erp", "channel": "C0PROD" if env == "prod" else "C0DEV",
              "approval": env == "prod", **({"approvers": ["U0APPR1"]} if env == "prod" else {})}
        for env, ns in release.namespaces.items()}}}))
    subprocess.run([helm, "upgrade", "--install", "bot", str(ROOT / "charts" / "erp-chatops"), "-n", "erp-chatops",
                    "-f", str(values), "--kubeconfig", str(kube.kubeconfig)], check=True, capture_output=True)
    token = kube.service_account_token("erp-chatops", "erp-chatops")
    # nothing outside the ERP namespaces, and no secrets cluster-wide
    assert kube.request("GET", "/api/v1/secrets", token=token)[0] == 403
    assert kube.request("GET", "/api/v1/namespaces/kube-system/secrets", token=token)[0] == 403
    assert kube.request("GET", "/api/v1/namespaces/erp-chatops/secrets", token=token)[0] == 403
    assert kube.request("GET", f"/apis/apps/v1/namespaces/{release.namespaces['dev']}/deployments",
                        token=token)[0] == 200
    # nor the ERP's own Secrets: helm's release records are ConfigMaps (issue 18 item 4)
    for ns in release.namespaces.values():
        kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-secret", "namespace": ns},
                    "stringData": {"password": "not-for-the-bot"}})
        assert kube.request("GET", f"/api/v1/namespaces/{ns}/secrets/db-secret", token=token)[0] == 403
        assert kube.request("GET", f"/api/v1/namespaces/{ns}/secrets", token=token)[0] == 403
    release.bot.stop()
    bot = BotProcess({**release.env, "KUBECONFIG": str(kube.write_kubeconfig(token, "bot"))}, tmp_path / "bot-sa.log")
    slack.bot_url = f"{bot.url}/slack/events"
    try:
        assert "revision *3*" in ask(background_loop, slack, "U0DEV1", "status dev", "C0DEV")
        ask(background_loop, slack, "U0DEV1", "rollback employee dev", "C0DEV")
        background_loop.run(slack.click("U0DEV1", plan_message(slack, "C0DEV"), CONFIRM_ACTION))
        release.wait_images("dev", employee="v1.1.0")  # helm ran as the bot's service account
        release.complete_rollouts("dev")
        wait_until(lambda: "Rolled back" in shown(plan_message(slack, "C0DEV")), what="the result")
    finally:
        bot.stop_soon()


def test_a_rollback_right_after_a_timed_out_deploy_is_followed_to_its_own_end(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop):
    """The failed deploy left Progressing=False (ProgressDeadlineExceeded) on the Deployment. The rollback's
    new generation is not failed: until the controller observes it, that condition is the old rollout's."""
    ns = release.namespaces["dev"]
    release.kube.set_rollout(ns, "employee-service", ready=1, failed_reason="ReplicaSet has timed out progressing.")
    ask(background_loop, slack, "U0DEV1", "rollback employee dev", channel="C0DEV")
    background_loop.run(slack.click("U0DEV1", plan_message(slack, "C0DEV"), CONFIRM_ACTION))
    release.wait_images("dev", employee="v1.1.0")
    wait_until(lambda: "rolling out" in shown(plan_message(slack, "C0DEV")), what="the rollout to be watched")
    time.sleep(2.5)  # the controller has not observed the new spec yet: the bot keeps waiting
    assert "failed" not in shown(plan_message(slack, "C0DEV")).lower()
    release.kube.set_rollout(ns, "employee-service")
    final = wait_until(lambda: "Rolled back" in shown(plan_message(slack, "C0DEV")) and plan_message(slack, "C0DEV"),
                       what="the result")
    assert "2/2 complete" in shown(final)


def test_autoscaled_replicas_survive_a_deploy_and_a_rollback(release: Release, slack: SlackWorkspace,
                                                             background_loop: BackgroundLoop):
    ns = release.namespaces["dev"]

    def replicas() -> int:
        return int(release.kube.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/employee-service")[1]
                   ["spec"]["replicas"])

    assert replicas() == 2  # the HPA's minimum in dev
    assert release.kube.autoscale(ns, {"employee-service": 4})["employee-service"] == 4  # load: the HPA scales up
    install(release.helm, release.kube, ns, "dev", {"employee": "v1.3.0"})  # the buildspec's deploy
    release.wait_images("dev", employee="v1.3.0")
    assert replicas() == 4
    ask(background_loop, slack, "U0DEV1", "rollback employee dev", channel="C0DEV")
    background_loop.run(slack.click("U0DEV1", plan_message(slack, "C0DEV"), CONFIRM_ACTION))
    release.wait_images("dev", employee="v1.2.0")
    assert replicas() == 4
    release.complete_rollouts("dev")  # and the rollback ends as one the HPA did not get in the way of
    wait_until(lambda: "Rolled back" in shown(plan_message(slack, "C0DEV")), what="the result")
    assert replicas() == 4


def test_a_rollout_that_does_not_finish_in_time_says_so(release: Release, slack: SlackWorkspace,
                                                         background_loop: BackgroundLoop, tmp_path: Path):
    release.bot.stop()
    impatient = BotProcess({**release.env, "ROLLOUT_TIMEOUT_SECONDS": "2"}, tmp_path / "impatient.log")
    slack.bot_url = f"{impatient.url}/slack/events"
    try:
        ask(background_loop, slack, "U0DEV1", "rollback employee dev", "C0DEV")
        background_loop.run(slack.click("U0DEV1", plan_message(slack, "C0DEV"), CONFIRM_ACTION))
        # nobody plays the controller this time: the new generation is never rolled out
        final = wait_until(lambda: "did not finish" in shown(plan_message(slack, "C0DEV"))
                           and plan_message(slack, "C0DEV"), timeout=30, what="the time-out")
        assert "within 2s" in shown(final) and "employee-service" in shown(final)
        history = ask(background_loop, slack, "U0DEV1", "history employee dev", "C0DEV")
        assert "tried to roll back employee in dev: failed (rollout timed out)" in history
    finally:
        impatient.stop_soon()


def test_an_unreachable_cluster_is_said_plainly(release: Release, slack: SlackWorkspace,
                                                background_loop: BackgroundLoop, tmp_path: Path):
    release.bot.stop()
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(release.kube.kubeconfig.read_text().replace(release.kube.url, "https://127.0.0.1:9"))
    cut_off = BotProcess({**release.env, "KUBECONFIG": str(dead)}, tmp_path / "cut-off.log")
    slack.bot_url = f"{cut_off.url}/slack/events"
    try:
        text = ask(background_loop, slack, "U0ONCALL", "status prod")
        assert ":warning: cannot reach the cluster" in text or "helm could not read it" in text
        answer = ask(background_loop, slack, "U0DEV1", "rollback employee dev", "C0DEV")
        assert "helm could not read the release" in answer
        assert "Traceback" not in text + answer
    finally:
        cut_off.stop_soon()


def test_a_plan_planted_in_the_table_runs_nothing(release: Release, slack: SlackWorkspace,
                                                  background_loop: BackgroundLoop, aws_resources: dict[str, str]):
    """Issue 18 item 3: a plan written into the state table by anyone but the bot (CI, a leaked role) decided
    what helm ran. The bot seals the plans it stores; anything else is refused."""
    from bot.aws.clients import AwsClients
    from bot.aws.state import StateStore

    plan = {"id": "planted0001", "environment": "dev", "namespace": release.namespaces["dev"], "release": "erp",
            "service": "employee", "current_revision": 3, "target_revision": 1,
            "current_tags": {"employee": "v1.2.0"}, "target_tags": {"employee": "v1.0.0"},
            "requested_by": "U0DEV1", "channel": "C0DEV", "ts": ""}
    background_loop.run(StateStore(AwsClients(), aws_resources["table"]).put_marker(
        "ROLLBACK#planted0001", "PLAN", 3600, only_if_absent=False, status="pending", plan=json.dumps(plan),
        seal="0" * 64))
    posted = slack.m_chat_postMessage({"channel": "C0DEV", "text": "Roll back employee in dev?", "blocks": [
        {"type": "actions", "elements": [{"type": "button", "action_id": CONFIRM_ACTION, "value": "planted0001",
                                          "text": {"type": "plain_text", "text": "Confirm rollback"}}]}]})
    message = next(m for m in slack.channel_messages("C0DEV") if m.ts == posted["ts"])
    background_loop.run(slack.click("U0DEV1", message, CONFIRM_ACTION))
    wait_until(lambda: [m for m in slack.ephemerals("U0DEV1") if "not one I made" in m.text], what="the refusal")
    time.sleep(1)
    assert release.tags("dev")["employee"] == "v1.2.0"


def test_a_slack_outage_while_the_plan_is_edited_loses_neither_the_audit_nor_the_lock(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop):
    """helm has rolled back: whatever Slack answers to the plan's edits, the rollback is audited, recorded and
    dev locked (a lost edit is a stale card; a lost audit record is a rollback nobody can account for)."""
    ask(background_loop, slack, "U0DEV1", "rollback employee dev", channel="C0DEV")
    plan = plan_message(slack, "C0DEV")
    slack.faults.append(Fault("chat.update", error="fatal_error", times=10**6))
    background_loop.run(slack.click("U0DEV1", plan, CONFIRM_ACTION))
    release.wait_images("dev", employee="v1.1.0")
    release.kube.set_rollout(release.namespaces["dev"], "employee-service")
    wait_until(lambda: any("dev is locked for <@U0DEV1>" in m.text for m in slack.thread("C0DEV", plan.ts)),
               what="the lock note in the plan's thread")
    slack.faults.clear()
    text = ask(background_loop, slack, "U0DEV1", "history employee dev", channel="C0DEV")
    assert "<@U0DEV1> rolled back employee in dev" in text


def succeeded_deploy_card(slack: SlackWorkspace, aws_resources: dict[str, str], service: str, execution: str) -> Message:
    """A dev deploy card that succeeded, as the bot posts and stores it (its channel and ts by execution)."""
    card = DeployCard(execution_id=execution, pipeline="erp-dev-ChatOps", environment="dev", service=service,
                      channel="C0DEV", requested_by="U0DEV1", status="Succeeded")
    text, blocks = render_card(card)
    posted = slack.m_chat_postMessage({"channel": "C0DEV", "text": text, "blocks": blocks})
    boto3.client("dynamodb").put_item(TableName=aws_resources["table"], Item={
        "pk": {"S": f"EXEC#{execution}"}, "sk": {"S": "CARD"}, "execution_id": {"S": execution},
        "channel": {"S": "C0DEV"}, "ts": {"S": posted["ts"]}, "version": {"N": "0"}})
    return next(m for m in slack.channel_messages("C0DEV") if m.ts == posted["ts"])


def pipeline_deployed_employee(release: Release, slack: SlackWorkspace, aws_resources: dict[str, str]) -> Message:
    """As a pipeline execution deploys employee v2.0.0 to dev (revision 4) and records it; its card."""
    from bot.ci.build_steps import record_deploy
    execution = str(uuid.uuid4())
    install(release.helm, release.kube, release.namespaces["dev"], "dev", {"employee": "v2.0.0"}, execution=execution)
    release.complete_rollouts("dev")
    record_deploy({"STATE_TABLE": aws_resources["table"], "PIPELINE_EXECUTION_ID": execution}, "dev", "b" * 40,
                  ["employee"], images={"employee": "v2.0.0"})
    return succeeded_deploy_card(slack, aws_resources, "employee", execution)


def test_an_alarm_soon_after_a_deploy_rolls_it_back_where_the_environment_asks(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop, aws_resources: dict[str, str]):
    """dev's `rollback_on_alarm`: the deploy's plan runs without a click, announced in its thread and audited;
    the alarm firing again (flapping) or the event delivered twice never rolls back a second time."""
    ns, card = release.namespaces["dev"], pipeline_deployed_employee(release, slack, aws_resources)
    event = set_alarm(AwsClients(), aws_resources["queue_url"], "dev", "employee", firing=True)
    boto3.client("sqs").send_message(QueueUrl=aws_resources["queue_url"], MessageBody=json.dumps(event))  # twice

    def auto() -> list[Message]:
        return [m for m in slack.thread("C0DEV", card.ts) if "automatically" in m.text]
    [note] = wait_until(auto, 60, "the automatic rollback in the deploy's thread")
    assert "erp-dev-employee-errors" in note.text
    release.wait_images("dev", timeout=60, employee="v1.2.0")  # what ran before the deploy
    release.complete_rollouts("dev")
    wait_until(lambda: "Rolled back" in shown(auto()[0]), what="the rollback's result in the thread")
    text = ask(background_loop, slack, "U0DEV1", "history employee dev", channel="C0DEV")
    assert "erp-chatops rolled back employee in dev" in text
    # flapping: OK, then ALARM again within the window: one rollback, one note
    set_alarm(AwsClients(), aws_resources["queue_url"], "dev", "employee", firing=False)
    set_alarm(AwsClients(), aws_resources["queue_url"], "dev", "employee", firing=True)
    wait_until(lambda: any("in ALARM again" in m.text for m in slack.messages if m.thread_ts == card.ts),
               what="the alarm message to say it fires again")
    time.sleep(2)
    assert len(auto()) == 1 and release.tags("dev")["employee"] == "v1.2.0"
    history = subprocess.run([release.helm, "history", "erp", "-n", ns, "-o", "json", "--kubeconfig",
                              str(release.kube.kubeconfig)], capture_output=True, text=True, check=True).stdout
    assert json.loads(history)[-1]["revision"] == 5  # the deploy's revision 4, one rollback: revision 5


def test_an_automatic_rollback_whose_replica_dies_after_helm_is_finished_by_another(
        release: Release, slack: SlackWorkspace, background_loop: BackgroundLoop, aws_resources: dict[str, str],
        tmp_path: Path):
    """The replica running an alarm's rollback is killed while it follows the rollout (helm has run): another
    replica's sweep takes the lapsed lease over, sees from helm's history that the plan ran, follows the
    rollout, and audits and records it; helm is not run twice."""
    ns, card = release.namespaces["dev"], pipeline_deployed_employee(release, slack, aws_resources)
    release.bot.stop()
    fast = {**release.env, "AUTO_ROLLBACK_BEAT_SECONDS": "1", "ROLLOUT_TIMEOUT_SECONDS": "120"}
    first = BotProcess(fast, tmp_path / "first.log")
    slack.bot_url = f"{first.url}/slack/events"
    set_alarm(AwsClients(), aws_resources["queue_url"], "dev", "employee", firing=True)
    # an alarm event, a plan (helm reads and renders), then helm: several helm runs on a busy machine
    release.wait_images("dev", timeout=60, employee="v1.2.0")  # helm ran; the rollout is still being followed
    wait_until(lambda: any("rolling out" in shown(m) for m in slack.thread("C0DEV", card.ts)), what="the rollout")
    first.proc.kill()  # SIGKILL: no drain, no goodbye
    first.proc.wait(10)
    ddb = boto3.client("dynamodb")
    planted = {"pk": {"S": "AUTOROLLBACK"}, "sk": {"S": "planted"}, "status": {"S": "due"}, "beat": {"N": "0"},
               "environment": {"S": "dev"}, "service": {"S": "employee"}, "alarm": {"S": "x"},
               "channel": {"S": "C0DEV"}, "thread_ts": {"S": card.ts}, "row_seal": {"S": "0" * 64},
               "ttl": {"N": str(int(time.time()) + 3600)}}
    ddb.put_item(TableName=aws_resources["table"], Item=planted)  # by someone who can write the table, not the bot
    second = BotProcess(fast, tmp_path / "second.log")
    slack.bot_url = f"{second.url}/slack/events"
    try:
        wait_until(lambda: ddb.get_item(TableName=aws_resources["table"], Key={
            "pk": {"S": "AUTOROLLBACK"}, "sk": {"S": "planted"}})["Item"]["status"]["S"] == "refused", 20,
            "the planted request to be refused")
        assert not [m for m in slack.thread("C0DEV", card.ts) if "Not rolled back" in m.text]  # nothing ran or said
        release.complete_rollouts("dev")

        def note() -> Message | None:
            return next((m for m in slack.thread("C0DEV", card.ts) if "Rolled back" in shown(m)), None)
        done = wait_until(note, 40, "the other replica to finish the rollback")
        assert "automatically" in done.text
        history = subprocess.run([release.helm, "history", "erp", "-n", ns, "-o", "json", "--kubeconfig",
                                  str(release.kube.kubeconfig)], capture_output=True, text=True, check=True).stdout
        assert json.loads(history)[-1]["revision"] == 5  # helm ran once
        text = ask(background_loop, slack, "U0DEV1", "history employee dev", channel="C0DEV")
        assert "erp-chatops rolled back employee in dev" in text
        records = boto3.client("dynamodb").get_item(TableName=aws_resources["table"], Key={
            "pk": {"S": "LASTDEPLOY#dev"}, "sk": {"S": "ROLLEDBACK#employee"}}).get("Item")
        assert records and records["image"]["S"] == "v1.2.0"  # the re-deploy button will not bring v2.0.0 back
    finally:
        second.stop_soon()
