"""`/erp promote` end to end: signed commands and clicks to the real bot process, the CodePipeline stand-in
(its Promote stage runs the buildspec's own gate and records, Build and Deploy skipped by their stage
conditions), moto's ECR with scan findings, the local Slack Web API."""

from __future__ import annotations

import asyncio
import json
import time

import boto3
import pytest

from bot.aws.clients import AwsClients
from bot.ci.build_steps import record_deploy
from bot.slack.deploy_card_blocks import APPROVE_ACTION
from handlers.promote import PROMOTE_ACTION
from sandbox.codepipeline import PipelineStandIn
from sandbox.ecr_images import publish_image
from sandbox.erp_services import repository_of
from sandbox.slack_workspace import SlackWorkspace
from tests.handlers.test_deploy import card_text, command, wait_for_card
from tests.handlers.test_locks import answer, gated  # noqa: F401 - the fixture: the stand-in as CodeBuild has it
from tests.support import BackgroundLoop, BotProcess, wait_until


def records(table: str, env: str) -> dict[str, dict[str, str]]:
    items = boto3.client("dynamodb").query(TableName=table, KeyConditionExpression="pk = :pk",
                                           ExpressionAttributeValues={":pk": {"S": f"LASTDEPLOY#{env}"}})["Items"]
    return {item["sk"]["S"]: {k: str(next(iter(v.values()))) for k, v in item.items()} for item in items}


def deploy_to_dev(loop: BackgroundLoop, slack: SlackWorkspace, pipeline: PipelineStandIn, service: str,
                  outcome: str = "Succeeded", user: str = "U0DEV1") -> str:
    before = set(pipeline.executions)
    command(loop, slack, user, "C0DEV", f"deploy {service} dev")
    [new] = wait_until(lambda: [e for i, e in pipeline.executions.items() if i not in before], 20, "the execution")
    wait_until(lambda: new.status == outcome, 40, f"the dev deploy of {service} to end {outcome}")
    return new.revision


def test_a_promotion_deploys_the_digest_dev_ran_without_a_build_and_prod_approval_still_applies(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn,  # noqa: F811
        aws_resources: dict[str, str], erp_images: None):
    table = aws_resources["table"]
    revision = deploy_to_dev(background_loop, slack, gated, "employee")
    dev = records(table, "dev")["SERVICE#employee"]
    assert dev["commit"] == revision and dev["execution"] in gated.executions

    # too soon: dev has had it for seconds, promotions wait an hour; a deployer cannot override
    command(background_loop, slack, "U0DEV1", "C0PROD", "promote employee")
    soon = answer(slack, "U0DEV1", ":hourglass:")
    assert f"employee `{revision[:7]}` has been in dev for 0m; promotions wait 1h" in soon.text
    command(background_loop, slack, "U0DEV1", "C0PROD", 'promote employee override "tested by hand"')
    assert "You can't override the soak time: only" in answer(slack, "U0DEV1", ":no_entry:").text

    # an approver overrides, with a reason; the card says where the image comes from
    digest = boto3.client("ecr").describe_images(repositoryName=repository_of("employee"), imageIds=[
        {"imageTag": revision}])["imageDetails"][0]["imageDigest"]
    command(background_loop, slack, "U0APPR1", "C0PROD", 'promote employee to prod override "INC-42 fix verified"')
    card = wait_for_card(slack, "C0PROD", "Waiting for approval", timeout=30)
    shown = card_text(card)
    assert "Promoted from dev" in shown and revision[:7] in shown and digest[:19] in shown
    assert "soak overridden by <@U0APPR1>" in shown and "critical" in shown
    [execution] = [e for e in gated.executions.values() if e.variables["ENVIRONMENT"] == "prod"]
    assert execution.variables["PROMOTE_IMAGE"] == f"employee={revision}@{digest}"
    assert execution.revision == revision  # the Source action at dev's commit: the chart and values dev ran
    background_loop.run(slack.click("U0ONCALL", card, APPROVE_ACTION))
    wait_for_card(slack, "C0PROD", "Succeeded", timeout=40)
    # no build: Build and Deploy were skipped by their entry conditions, Promote deployed the dev image
    assert ("Build", "Build") not in execution.actions and ("Deploy", "Deploy") not in execution.actions
    assert execution.actions[("Promote", "Promote")].status == "Succeeded"
    prod = records(table, "prod")["SERVICE#employee"]
    assert prod["commit"] == revision and prod["image"] == f"{revision}@{digest}"
    audit = boto3.client("dynamodb").query(TableName=f"{table}-audit", KeyConditionExpression="pk = :pk",
                                           ExpressionAttributeValues={":pk": {"S": "AUDIT#prod"}})["Items"]
    assert [a["detail"]["S"] for a in audit if a["action"]["S"] == "soak_override"] == ["INC-42 fix verified"]

    # the list: what dev runs that prod does not, with a Promote button each
    other = deploy_to_dev(background_loop, slack, gated, "notification")
    command(background_loop, slack, "U0DEV1", "C0PROD", "promote")
    listed = answer(slack, "U0DEV1", "to promote from dev to prod")
    text = json.dumps(listed.blocks, ensure_ascii=False)
    assert f"*notification*: dev `{other[:7]}` · prod `none`" in text and "*employee*" not in text
    background_loop.run(slack.click("U0DEV1", listed, PROMOTE_ACTION))
    answer(slack, "U0DEV1", "promotions wait 1h")


def test_a_failed_dev_deploy_and_critical_findings_are_never_promoted(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn,  # noqa: F811
        aws_resources: dict[str, str], erp_images: None):
    table = aws_resources["table"]
    deploy_to_dev(background_loop, slack, gated, "employee")
    gated.faults.fail_deploy = True
    deploy_to_dev(background_loop, slack, gated, "employee", outcome="Failed", user="U0ONCALL")
    gated.faults.fail_deploy = False
    assert records(table, "dev")["ATTEMPT#employee"]["ok"] == "False"
    command(background_loop, slack, "U0APPR1", "C0PROD", 'promote employee override "urgent"')
    refused = answer(slack, "U0APPR1", ":no_entry:")
    assert "dev's last deploy of employee failed" in refused.text and "nothing was started" in refused.text

    # an image whose scan found a CRITICAL after it reached dev
    tag = "c" * 40
    _, digest = publish_image(AwsClients(), repository_of("approval-request"), tag, 1)
    record_deploy({"STATE_TABLE": table, "PIPELINE_EXECUTION_ID": "dev-exec"}, "dev", tag, ["approval-request"],
                  images={"approval-request": f"{tag}@{digest}"})
    command(background_loop, slack, "U0APPR1", "C0PROD", 'promote approval-request override "urgent"')
    critical = answer(slack, "U0APPR1", "CRITICAL")
    assert "has 1 CRITICAL finding(s): not promoting it" in critical.text
    assert not [e for e in gated.executions.values() if e.variables["ENVIRONMENT"] == "prod"]


def test_the_promote_list_offers_only_what_dev_runs_well_against_what_prod_runs_now(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, aws_resources: dict[str, str]):
    """Review finding: the list read only the last good deploys. A service dev rolled back, or whose last dev
    deploy failed, was offered with a Promote button (the click then refused), and after a prod rollback the
    list compared dev with what prod ran before it."""
    from bot.aws.state import StateStore

    table = aws_resources["table"]
    state = StateStore(AwsClients(), table)
    environ = {"STATE_TABLE": table, "PIPELINE_EXECUTION_ID": "exec-dev"}
    a, b, c, d, e = ("a" * 40, "b" * 40, "c" * 40, "d" * 40, "e" * 40)
    # employee: deployed well in dev, then rolled back there
    record_deploy(environ, "dev", a, ["employee"], images={"employee": f"{a}@sha256:{'1' * 64}"})
    asyncio.run(state.record_rollback("dev", {"employee": "v1.2.0"}, "rolled back by U0ONCALL", at=int(time.time()) + 1))
    # notification: deployed well, then a failed attempt in dev
    record_deploy(environ, "dev", b, ["notification"], images={"notification": f"{b}@sha256:{'2' * 64}"})
    record_deploy(environ, "dev", c, ["notification"], ok=False, images={"notification": f"{c}@sha256:{'3' * 64}"})
    # approval-request: dev runs `d`; prod ran `g`, then rolled back to an older one: prod runs `e` now
    g = "9" * 40
    record_deploy(environ, "dev", d, ["approval-request"], images={"approval-request": f"{d}@sha256:{'4' * 64}"})
    record_deploy(environ, "prod", g, ["approval-request"], images={"approval-request": f"{g}@sha256:{'6' * 64}"})
    asyncio.run(state.record_rollback("prod", {"approval-request": e}, "rolled back by U0APPR1", at=int(time.time()) + 1))

    # approval-processing: prod ran dev's image and rolled it back: not offered again
    f = "f" * 40
    record_deploy(environ, "dev", f, ["approval-processing"], images={"approval-processing": f"{f}@sha256:{'5' * 64}"})
    record_deploy(environ, "prod", f, ["approval-processing"], images={"approval-processing": f"{f}@sha256:{'5' * 64}"})
    asyncio.run(state.record_rollback("prod", {"approval-processing": e}, "rolled back by U0APPR1",
                                      at=int(time.time()) + 1))

    command(background_loop, slack, "U0DEV1", "C0PROD", "promote")
    listed = answer(slack, "U0DEV1", "to promote from dev to prod")
    text = json.dumps(listed.blocks, ensure_ascii=False)
    assert f"*approval-request*: dev `{d[:7]}` · prod `{e[:7]}`" in text, text
    assert f"*approval-processing*: dev `{f[:7]}` · prod rolled it back" in text, text
    promote_buttons = [b["accessory"]["value"].partition("=")[0] for b in listed.blocks
                       if b.get("accessory", {}).get("action_id") == PROMOTE_ACTION]
    assert promote_buttons == ["approval-request"], promote_buttons
    assert "*employee*: dev was rolled back" in text and "*notification*: dev's last deploy failed" in text
    command(background_loop, slack, "U0APPR1", "C0PROD", 'promote approval-processing override "urgent"')
    refused = answer(slack, "U0APPR1", ":no_entry:")
    assert "prod rolled approval-processing `fffffff` back" in refused.text and "won't promote it again" in refused.text


@pytest.mark.parametrize(("text", "says"), [
    ("promote employee to dev", "Promotion goes from dev to prod"),
    ("promote employe", "did you mean `employee`?"),
    ("promote employee override", "`override` needs a reason"),
    ("promote employee now", "Unexpected `now`"),
])
def test_promote_mistakes_get_one_line_saying_what_to_type(bot: BotProcess, slack: SlackWorkspace,
                                                          background_loop: BackgroundLoop, text: str, says: str):
    command(background_loop, slack, "U0DEV1", "C0PROD", text)
    reply = answer(slack, "U0DEV1", says)
    assert "\n" not in reply.text


def test_a_promotion_started_from_the_console_must_name_what_dev_ran(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, gated: PipelineStandIn,  # noqa: F811
        aws_resources: dict[str, str], erp_images: None):
    """PROMOTE_IMAGE is a pipeline variable anyone who may start the pipeline can set: the Promote action
    itself deploys only what the source environment last deployed well, and only where the bot's config
    promotes to."""
    from bot.aws.state import StateStore
    from bot.ci.build_steps import StepFailed, promotion_gate

    revision = deploy_to_dev(background_loop, slack, gated, "employee")
    image = records(aws_resources["table"], "dev")["SERVICE#employee"]["image"]
    environ = {"STATE_TABLE": aws_resources["table"], "PIPELINE_EXECUTION_ID": "console"}
    promotion_gate(environ, "prod", [("employee", image)])  # what dev ran: fine
    with pytest.raises(StepFailed, match="is not what dev last deployed well"):
        promotion_gate(environ, "prod", [("employee", f"{revision}@sha256:{'0' * 64}")])
    with pytest.raises(StepFailed, match="<tag>@sha256:<digest>"):
        promotion_gate(environ, "prod", [("employee", revision)])
    other = f"{revision}@sha256:{'1' * 64}"  # not what dev runs
    with pytest.raises(StepFailed, match="dev takes no promotions"):
        promotion_gate(environ, "dev", [("employee", other)])
    promotion_gate(environ, "dev", [("employee", image)])  # dev's own last deploy again: the drift's re-deploy
    time.sleep(1)  # records keep whole seconds: the rollback comes after the deploy
    asyncio.run(StateStore(AwsClients(), aws_resources["table"]).record_rollback("dev", {"employee": "v1.0.0"},
                                                                                  "revision 3 -> 2"))
    record_deploy(environ, "dev", "f" * 40, ["employee"], ok=False, images={"employee": "v3.0.0"})  # then a failure
    with pytest.raises(StepFailed, match="dev takes no promotions"):  # never the image that was rolled back
        promotion_gate(environ, "dev", [("employee", image)])

    async def console_start() -> str:  # as the console would: no bot, a promotion to dev
        execution = gated.start({"ENVIRONMENT": "dev", "SERVICE": "employee", "PROMOTE_IMAGE": f"employee={other}"})
        return execution.id
    execution_id = background_loop.run(console_start())
    wait_until(lambda: gated.executions[execution_id].status == "Failed", 40, "the console promotion to fail")
    assert gated.executions[execution_id].actions[("Promote", "Promote")].status == "Failed"
