"""The sandbox's stand-ins answer as the real services do: Slack's Block Kit limits, CodePipeline's protocol."""

from __future__ import annotations

import asyncio
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from bot.slack.web_client import make_web_client
from sandbox.block_kit_limits import validate_blocks, validate_view
from sandbox.codepipeline import PipelineStandIn
from sandbox.slack_workspace import SlackWorkspace
from tests.support import BOT_TOKEN, ROOT, wait_until


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(**extra: object) -> dict:
    return {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "go", **extra}


@pytest.mark.parametrize(("blocks", "error"), [
    ([section("x")] * 51, "no more than 50 items"),
    ([section("x" * 3001)], "less than 3001 characters"),
    ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "no more than 10 items"),
    ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}], "less than 2001 characters"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "less than 151 characters"),
    ([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}], "must be plain_text"),
    ([{"type": "actions", "elements": [button(value="v" * 2001)]}], "at most 2000 characters"),
    ([{"type": "actions", "elements": [button()] * 26}], "between 1 and 25 items"),
    ([{"type": "actions", "elements": [button(style="green")]}], "must be primary or danger"),
    ([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "t" * 76},
                                        "action_id": "a"}]}], "less than 76 characters"),
    ([{"type": "actions", "elements": [button(confirm={"title": {"type": "plain_text", "text": "t"},
                                                       "text": {"type": "mrkdwn", "text": "x" * 301},
                                                       "confirm": {"type": "plain_text", "text": "ok"},
                                                       "deny": {"type": "plain_text", "text": "no"}})]}],
     "less than 301 characters"),
    ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}], "between 1 and 10 items"),
    ([{"type": "video"}], "unsupported block type"),
    ([{"type": "section", "block_id": "b" * 256, "text": {"type": "mrkdwn", "text": "x"}}], "at most 255"),
])
def test_block_kit_limits_as_slack_documents_them(blocks: list, error: str):
    errors = validate_blocks(blocks)
    assert errors and any(error in e for e in errors), errors


def test_what_slack_accepts_passes():
    ok = [{"type": "header", "text": {"type": "plain_text", "text": "Deploy"}}, section("x" * 3000),
          {"type": "divider"}, {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}]},
          {"type": "actions", "elements": [button(value="v" * 2000, style="danger")] * 25}]
    assert validate_blocks(ok) == [] and validate_blocks([section("x")] * 100, "modal") == []
    assert validate_view({"type": "modal", "title": {"type": "plain_text", "text": "t" * 25}, "blocks": []})


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")  # the no_text case, on purpose
async def test_the_web_api_refuses_what_slack_refuses(slack: SlackWorkspace):
    client = make_web_client(BOT_TOKEN, f"{slack.base_url}/api/")
    for call, error in ((client.chat_postMessage(channel="C0NOPE", text="x"), "channel_not_found"),
                        (client.chat_postMessage(channel="C0DEV", text="x", blocks=[section("x" * 3001)]), "invalid_blocks"),
                        (client.chat_postMessage(channel="C0DEV"), "no_text"),
                        (client.chat_update(channel="C0DEV", ts="1.1", text="x"), "message_not_found"),
                        (client.usergroups_users_list(usergroup="S0NOPE"), "no_such_subteam")):
        try:
            await call
        except Exception as e:
            assert error in str(e)
        else:
            raise AssertionError(f"expected {error}")
    bad = make_web_client("xoxb-wrong", f"{slack.base_url}/api/")
    try:
        await bad.auth_test()
    except Exception as e:
        assert "invalid_auth" in str(e)


def codepipeline(pipeline: PipelineStandIn):  # type: ignore[no-untyped-def]
    return boto3.client("codepipeline", endpoint_url=pipeline.url)


def test_stand_in_speaks_codepipeline(pipeline: PipelineStandIn):
    cp = codepipeline(pipeline)
    with pytest.raises(ClientError, match="PipelineNotFoundException"):
        cp.start_pipeline_execution(name="nope")
    with pytest.raises(ClientError, match="ValidationException"):
        cp.start_pipeline_execution(name="erp-pipeline", variables=[{"name": "COLOUR", "value": "red"}])
    token = "same-request"
    first = cp.start_pipeline_execution(name="erp-pipeline", clientRequestToken=token, variables=[
        {"name": "ENVIRONMENT", "value": "prod"}, {"name": "SERVICE", "value": "employee"}])
    again = cp.start_pipeline_execution(name="erp-pipeline", clientRequestToken=token)
    assert first["pipelineExecutionId"] == again["pipelineExecutionId"]  # idempotent
    execution_id = first["pipelineExecutionId"]

    def approval_token() -> str | None:
        details = cp.list_action_executions(pipelineName="erp-pipeline",
                                            filter={"pipelineExecutionId": execution_id})["actionExecutionDetails"]
        open_ = [d for d in details if d["stageName"] == "Approval" and d["status"] == "InProgress"]
        return open_[0]["output"]["executionResult"]["externalExecutionId"] if open_ else None

    approval = wait_until(approval_token, what="the approval stage")
    with pytest.raises(ClientError, match="InvalidApprovalTokenException"):
        cp.put_approval_result(pipelineName="erp-pipeline", stageName="Approval", actionName="Approval",
                               token="not-the-token", result={"summary": "x", "status": "Approved"})
    cp.put_approval_result(pipelineName="erp-pipeline", stageName="Approval", actionName="Approval",
                           token=approval, result={"summary": "ok", "status": "Approved"})
    with pytest.raises(ClientError, match="ApprovalAlreadyCompletedException"):
        cp.put_approval_result(pipelineName="erp-pipeline", stageName="Approval", actionName="Approval",
                               token=approval, result={"summary": "again", "status": "Rejected"})
    wait_until(lambda: cp.get_pipeline_execution(pipelineName="erp-pipeline", pipelineExecutionId=execution_id)
               ["pipelineExecution"]["status"] == "Succeeded", what="success")
    execution = cp.get_pipeline_execution(pipelineName="erp-pipeline", pipelineExecutionId=execution_id)
    variables = {v["name"]: v["resolvedValue"] for v in execution["pipelineExecution"]["variables"]}
    assert variables["ENVIRONMENT"] == "prod" and variables["SLACK_THREAD_TS"] == " "


def test_stand_in_stops_and_lists(pipeline: PipelineStandIn):
    cp = codepipeline(pipeline)
    running = cp.start_pipeline_execution(name="erp-pipeline", variables=[{"name": "ENVIRONMENT", "value": "prod"}])
    time.sleep(0.3)
    cp.stop_pipeline_execution(pipelineName="erp-pipeline", pipelineExecutionId=running["pipelineExecutionId"],
                               reason="wrong branch")
    wait_until(lambda: cp.get_pipeline_execution(pipelineName="erp-pipeline",
                                                 pipelineExecutionId=running["pipelineExecutionId"])
               ["pipelineExecution"]["status"] == "Stopped", what="the stop")
    with pytest.raises(ClientError, match="PipelineExecutionNotStoppableException"):
        cp.stop_pipeline_execution(pipelineName="erp-pipeline", pipelineExecutionId=running["pipelineExecutionId"])
    listed = cp.list_pipeline_executions(pipelineName="erp-pipeline")["pipelineExecutionSummaries"]
    assert listed[0]["pipelineExecutionId"] == running["pipelineExecutionId"] and listed[0]["status"] == "Stopped"
    states = [e["detail"]["state"] for e in pipeline.emitted if e["detail-type"].endswith("Pipeline Execution State Change")]
    assert states[-1] == "STOPPED"


def _approval_stage(cp):  # type: ignore[no-untyped-def]
    return next(s for s in cp.get_pipeline_state(name="erp-pipeline")["stageStates"] if s["stageName"] == "Approval")


def test_parallel_mode_approvals_as_aws_documents_them(pipeline: PipelineStandIn):
    """botocore's PutApprovalResult documentation: for a pipeline in PARALLEL mode the token is not available
    from GetPipelineState; use the externalExecutionId that ListActionExecutions gives as the token."""
    cp = codepipeline(pipeline)
    assert cp.get_pipeline(name="erp-pipeline")["pipeline"]["executionMode"] == "PARALLEL"
    first, second = (cp.start_pipeline_execution(name="erp-pipeline", variables=[
        {"name": "ENVIRONMENT", "value": "prod"}, {"name": "SERVICE", "value": s}])["pipelineExecutionId"]
        for s in ("employee", "notification"))

    def open_approval(execution_id: str) -> dict | None:
        pages = cp.get_paginator("list_action_executions").paginate(
            pipelineName="erp-pipeline", filter={"pipelineExecutionId": execution_id},
            PaginationConfig={"PageSize": 1})
        details = [d for page in pages for d in page["actionExecutionDetails"]]
        assert {d["pipelineExecutionId"] for d in details} <= {execution_id}  # the filter holds
        return next((d for d in details if d["stageName"] == "Approval" and d["status"] == "InProgress"), None)

    waiting = {e: wait_until(lambda e=e: open_approval(e), what="both approvals") for e in (first, second)}
    # paging one detail at a time reached Source and Build too
    assert len(cp.list_action_executions(pipelineName="erp-pipeline", filter={"pipelineExecutionId": first},
                                         maxResults=1)["actionExecutionDetails"]) == 1
    # GetPipelineState shows the stage, without a token
    latest = _approval_stage(cp)["actionStates"][0].get("latestExecution", {})
    assert latest.get("status") == "InProgress" and "token" not in latest
    tokens = {e: d["output"]["executionResult"]["externalExecutionId"] for e, d in waiting.items()}
    assert tokens[first] != tokens[second]
    # the older execution is approved with its own token, though the newer one entered the stage last
    cp.put_approval_result(pipelineName="erp-pipeline", stageName="Approval", actionName="Approval",
                           token=tokens[first], result={"summary": "ok", "status": "Approved"})
    cp.put_approval_result(pipelineName="erp-pipeline", stageName="Approval", actionName="Approval",
                           token=tokens[second], result={"summary": "no", "status": "Rejected"})
    for execution_id, status in ((first, "Succeeded"), (second, "Failed")):
        wait_until(lambda e=execution_id, s=status: cp.get_pipeline_execution(
            pipelineName="erp-pipeline", pipelineExecutionId=e)["pipelineExecution"]["status"] == s, what=status)


def test_list_action_executions_refuses_what_aws_refuses(pipeline: PipelineStandIn):
    cp = codepipeline(pipeline)
    with pytest.raises(ClientError, match="PipelineNotFoundException"):
        cp.list_action_executions(pipelineName="nope")
    with pytest.raises(ClientError, match="PipelineExecutionNotFoundException"):
        cp.list_action_executions(pipelineName="erp-pipeline",
                                  filter={"pipelineExecutionId": "00000000-0000-0000-0000-000000000000"})
    with pytest.raises(ClientError, match="InvalidNextTokenException"):
        cp.list_action_executions(pipelineName="erp-pipeline", nextToken="not-a-token-it-gave")
    raw = boto3.client("codepipeline", endpoint_url=pipeline.url,
                       config=__import__("botocore.config", fromlist=["Config"]).Config(parameter_validation=False))
    with pytest.raises(ClientError, match="ValidationException"):
        raw.list_action_executions(pipelineName="erp-pipeline", maxResults=101)  # 1..100 in the API model


def test_an_unanswered_approval_expires_after_seven_days(pipeline: PipelineStandIn):
    """AWS's user guide (Approve or reject an approval action): with no response within seven days the
    pipeline fails; the token is then refused ("already received a response or has expired")."""
    cp = codepipeline(pipeline)
    execution_id = cp.start_pipeline_execution(name="erp-pipeline", variables=[
        {"name": "ENVIRONMENT", "value": "prod"}, {"name": "SERVICE", "value": "employee"}])["pipelineExecutionId"]

    def token() -> str | None:
        details = cp.list_action_executions(pipelineName="erp-pipeline",
                                            filter={"pipelineExecutionId": execution_id})["actionExecutionDetails"]
        waiting = [d for d in details if d["stageName"] == "Approval" and d["status"] == "InProgress"]
        return waiting[0]["output"]["executionResult"]["externalExecutionId"] if waiting else None

    approval = wait_until(token, what="the approval")
    pipeline.advance(6 * 86400)  # six days: still open
    time.sleep(0.3)
    assert token() == approval
    pipeline.advance(86400 + 1)
    wait_until(lambda: cp.get_pipeline_execution(pipelineName="erp-pipeline", pipelineExecutionId=execution_id)
               ["pipelineExecution"]["status"] == "Failed", what="the expiry")
    with pytest.raises(ClientError, match="InvalidApprovalTokenException"):
        cp.put_approval_result(pipelineName="erp-pipeline", stageName="Approval", actionName="Approval",
                               token=approval, result={"summary": "too late", "status": "Approved"})
    [failed] = [e for e in pipeline.emitted if e["detail"].get("stage") == "Approval"
                and e["detail"].get("action") and e["detail"]["state"] == "FAILED"]
    [started] = [e for e in pipeline.emitted if e["detail"].get("stage") == "Approval"
                 and e["detail"].get("action") and e["detail"]["state"] == "STARTED"]
    from datetime import datetime
    seconds = (datetime.fromisoformat(failed["time"].replace("Z", "+00:00"))
               - datetime.fromisoformat(started["time"].replace("Z", "+00:00"))).total_seconds()
    assert seconds >= 7 * 86400


def test_ecr_serves_scan_findings_a_page_at_a_time(ecr_pages, erp_images):  # type: ignore[no-untyped-def]
    """botocore's ECR docs: up to 100 results a page without maxResults, 1 to 1000 with it, then nextToken."""
    from bot.aws.clients import AwsClients
    from sandbox.ecr_images import publish_image

    publish_image(AwsClients(), "erp/employee-service", "paged-1")  # 10 findings
    ecr = boto3.client("ecr", endpoint_url=ecr_pages.url)
    first = ecr.describe_image_scan_findings(repositoryName="erp/employee-service", imageId={"imageTag": "paged-1"},
                                             maxResults=4)
    assert len(first["imageScanFindings"]["findings"]) == 4 and first["nextToken"]
    pages = ecr.get_paginator("describe_image_scan_findings").paginate(
        repositoryName="erp/employee-service", imageId={"imageTag": "paged-1"}, PaginationConfig={"PageSize": 3})
    assert [len(p["imageScanFindings"]["findings"]) for p in pages] == [3, 3, 3, 1]
    whole = ecr.describe_image_scan_findings(repositoryName="erp/employee-service", imageId={"imageTag": "paged-1"})
    assert len(whole["imageScanFindings"]["findings"]) == 10 and "nextToken" not in whole
    with pytest.raises(ClientError, match="InvalidParameterException"):
        ecr.describe_image_scan_findings(repositoryName="erp/employee-service", imageId={"imageTag": "paged-1"},
                                         nextToken="made-up")


def test_an_approval_can_be_answered_as_soon_as_it_is_listed(background_loop, aws_resources, aws_faults,  # type: ignore[no-untyped-def]
                                                            monkeypatch):
    """The stand-in listed an approval's token before it could take an answer: while its STARTED event was
    still being sent (slow under load, seen in CI), PutApprovalResult said ApprovalAlreadyCompleted.
    CodePipeline takes an answer for any request ListActionExecutions shows as InProgress."""
    from bot.aws.clients import AwsClients
    from sandbox.aws_fault_proxy import Fault as AwsFault
    from tests.support import served

    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", aws_faults.url)  # the stand-in's events go out slowly
    aws_faults.faults.append(AwsFault("sqs", "slow", times=10**6, operation="SendMessage", delay=0.5))
    with served(background_loop, PipelineStandIn(AwsClients(), aws_resources["queue_url"], step_seconds=0.01)) as s:
        cp = codepipeline(s)
        execution_id = cp.start_pipeline_execution(name="erp-pipeline", variables=[
            {"name": "ENVIRONMENT", "value": "prod"}, {"name": "SERVICE", "value": "employee"}])["pipelineExecutionId"]

        def token() -> str | None:
            details = cp.list_action_executions(pipelineName="erp-pipeline", filter={
                "pipelineExecutionId": execution_id})["actionExecutionDetails"]
            open_ = [d for d in details if d["stageName"] == "Approval" and d["status"] == "InProgress"]
            return open_[0]["output"]["executionResult"]["externalExecutionId"] if open_ else None

        found = wait_until(token, timeout=60, what="the approval request")
        cp.put_approval_result(pipelineName="erp-pipeline", stageName="Approval", actionName="Approval",
                               token=found, result={"summary": "at once", "status": "Approved"})
        wait_until(lambda: cp.get_pipeline_execution(pipelineName="erp-pipeline", pipelineExecutionId=execution_id)
                   ["pipelineExecution"]["status"] == "Succeeded", timeout=60, what="success")


def test_a_promotion_skips_build_and_deploy_and_a_skipped_actions_variables_cannot_be_used(
        background_loop, aws_resources, tmp_path):  # type: ignore[no-untyped-def]
    """Issue 19: PROMOTE_IMAGE skips Build and Deploy by their entry conditions and runs Promote. A skipped
    action exports nothing: a pipeline whose Deploy still ran after a skipped Build would have nothing for
    `#{BuildVariables.IMAGE_TAGS}`, and the stand-in fails that action rather than invent a value."""
    import json

    from bot.aws.clients import AwsClients
    from tests.support import served

    promotion = [{"name": "ENVIRONMENT", "value": "dev"}, {"name": "SERVICE", "value": "employee"},
                 {"name": "PROMOTE_IMAGE", "value": f"employee={'a' * 40}@sha256:{'b' * 64}"}]
    with served(background_loop, PipelineStandIn(AwsClients(), aws_resources["queue_url"], step_seconds=0.01)) as s:
        cp = codepipeline(s)
        execution_id = cp.start_pipeline_execution(name="erp-pipeline", variables=promotion)["pipelineExecutionId"]
        wait_until(lambda: s.executions[execution_id].status == "Succeeded", timeout=60, what="the promotion")
        assert sorted(s.executions[execution_id].actions) == [("Promote", "Promote"), ("Source", "Source")]
        stages = [(e["detail"].get("stage"), e["detail"]["state"]) for e in s.emitted
                  if e["detail-type"] == "CodePipeline Stage Execution State Change"
                  and e["detail"]["execution-id"] == execution_id]
        assert ("Build", "SKIPPED") in stages and ("Deploy", "SKIPPED") in stages and ("Promote", "SUCCEEDED") in stages
        # a normal run skips Promote
        normal = cp.start_pipeline_execution(name="erp-pipeline", variables=promotion[:2])["pipelineExecutionId"]
        wait_until(lambda: s.executions[normal].status == "Succeeded", timeout=60, what="the deploy")
        assert ("Promote", "Promote") not in s.executions[normal].actions

    definition = json.loads((ROOT / "infra" / "pipeline.json").read_text())
    del definition["pipeline"]["stages"][3]["beforeEntry"]  # Deploy no longer skipped on a promotion
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(definition))
    with served(background_loop, PipelineStandIn(AwsClients(), aws_resources["queue_url"], step_seconds=0.01,
                                                 definition=path)) as s:
        cp = codepipeline(s)
        execution_id = cp.start_pipeline_execution(name="erp-pipeline", variables=promotion)["pipelineExecutionId"]
        wait_until(lambda: s.executions[execution_id].status == "Failed", timeout=60, what="the failure")
        deploy = s.executions[execution_id].actions[("Deploy", "Deploy")]
        assert deploy.status == "Failed" and "BuildVariables.IMAGE_TAGS" in deploy.summary


async def test_ctrl_c_ends_an_open_pages_event_stream_at_once():
    """The page keeps an event stream open; when the sandbox stops, the stream ends with it, so Ctrl-C (and
    every browser test's teardown) does not wait for the next keep-alive write to find the page gone."""
    import aiohttp
    from aiohttp import web

    from sandbox.local_aws import free_port
    from sandbox.page import add_page_routes

    workspace = SlackWorkspace(bot_token=BOT_TOKEN, signing_secret="s" * 32)
    app = web.Application()
    add_page_routes(app, workspace)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/ui/events") as stream:
        assert b"hello" in await stream.content.readline()
        stopping = asyncio.ensure_future(runner.cleanup())
        # until the server ends the stream (a bound, so the old behaviour fails instead of hanging a minute)
        rest = await asyncio.wait_for(stream.content.read(), 40)
        await stopping
    assert b"keep-alive" not in rest, "the stream outlived the sandbox until its next keep-alive"
    late = workspace.subscribe()  # a page that connected a moment before Ctrl-C reaches the stream after it
    assert late.get_nowait() is None, "a stream opened while the sandbox stops would hold it for a minute"
