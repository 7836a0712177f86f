"""A CodePipeline stand-in for the calls moto lacks (pipeline executions).

boto3 reaches it through `AWS_ENDPOINT_URL_CODEPIPELINE`: it speaks CodePipeline's
JSON 1.1 protocol (X-Amz-Target, `__type` errors, epoch timestamps). It runs the
pipeline declaration in infra/pipeline.json stage by stage, honours the V2
variables and the Approval stage's beforeEntry VariableCheck (prod only), and
puts the events CodePipeline, CodeBuild and ECR emit, in EventBridge's envelope,
on the events queue, as the EventBridge rule does. Failures can be injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from bot.aws.clients import AwsClients
from bot.ci.build_steps import StepFailed, deploy_gate, promotion_gate, record_deploy
from bot.ci.notify import Notifier
from sandbox.ecr_images import publish_image
from sandbox.erp_services import SERVICES, repository_of
from sandbox.json_api import ApiError, JsonApi, error_response

log = logging.getLogger(__name__)

ACCOUNT = "806332783810"
REGION = "ap-northeast-2"
DEFINITION = Path(__file__).resolve().parents[1] / "infra" / "pipeline.json"
BUILDSPEC = Path(__file__).resolve().parents[1] / "buildspec.yml"
BUILD_PHASES = ("INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD")
APPROVAL_DAYS = 7


PipelineError = ApiError  # CodePipeline's errors, in its JSON protocol


@dataclass
class Faults:
    """What should go wrong: the sandbox and the tests turn these on."""

    fail_build: set[str] = field(default_factory=set)  # services whose image build fails
    critical_scan: set[str] = field(default_factory=set)  # services whose image has a CRITICAL finding
    fail_deploy: bool = False  # the helm upgrade fails
    throttle: int = 0  # the next N API calls answer ThrottlingException, as AWS does under load


@dataclass
class ActionRun:
    stage: str
    action: str
    status: str = "InProgress"  # InProgress | Succeeded | Failed | Abandoned
    action_execution_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str | None = None
    summary: str | None = None
    external_id: str | None = None
    external_url: str | None = None
    updated: float = field(default_factory=time.time)
    started: float = field(default_factory=time.time)
    expired: bool = False  # an approval nobody answered in time
    expires: float | None = None  # an approval's deadline on the stand-in's clock, fixed when it starts


@dataclass
class Execution:
    id: str
    variables: dict[str, str]
    revision: str
    trigger_type: str
    trigger_detail: str
    status: str = "InProgress"
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    actions: dict[tuple[str, str], ActionRun] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)
    decision: asyncio.Future[tuple[str, str]] | None = None
    task: asyncio.Task[None] | None = None
    status_summary: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # what it emitted, in order
    digests: dict[str, str] = field(default_factory=dict)  # service -> the digest its Build pushed


def _variable_check(operator: str, actual: str, value: str) -> bool:
    """The VariableCheck rule's operators (AWS's CodePipeline rule reference: EQ, NE, CONTAINS, MATCHES);
    any other is refused, as CodePipeline refuses the pipeline."""
    checks = {"EQ": lambda: actual == value, "NE": lambda: actual != value, "CONTAINS": lambda: value in actual,
              "MATCHES": lambda: re.search(value, actual) is not None}
    if operator not in checks:
        raise ValueError(f"VariableCheck: unknown operator {operator!r}")
    return checks[operator]()


def check_definition(pipeline: dict[str, Any]) -> None:
    """What CodePipeline refuses when the pipeline is created or updated (botocore's model, BeforeEntry
    Conditions: one condition; AWS's stage-conditions guide: an entry condition's result is FAIL or SKIP,
    and SKIP takes VariableCheck or LambdaInvoke rules; the VariableCheck rule's operators), and what our
    stand-in cannot run: a refusal at load, never an execution stuck halfway."""
    declared = {v["name"] for v in pipeline.get("variables", [])}
    for stage in pipeline["stages"]:
        conditions = stage.get("beforeEntry", {}).get("conditions", [])
        if len(conditions) > 1:
            raise ValueError(f"{stage['name']}: beforeEntry takes one condition")
        for condition in conditions:
            if condition.get("result") not in ("FAIL", "SKIP"):
                raise ValueError(f"{stage['name']}: an entry condition's result is FAIL or SKIP")
            for rule in condition.get("rules", []):
                if rule["ruleTypeId"]["provider"] != "VariableCheck":
                    raise ValueError(f"{stage['name']}: the stand-in runs VariableCheck rules only")
                cfg = rule["configuration"]
                m = re.fullmatch(r"#\{variables\.(\w+)\}", cfg.get("Variable", ""))
                if m is None or m.group(1) not in declared:
                    raise ValueError(f"{stage['name']}: {cfg.get('Variable')!r} is not a declared pipeline variable")
                _variable_check(cfg.get("Operator", ""), "", cfg.get("Value", ""))


class Unresolvable(Exception):
    """A variable of an action that did not run (its stage skipped): the action that needs it fails."""


def _epoch(t: float) -> float:
    return round(t, 3)


def _execution_result(run: ActionRun, names: tuple[str, str, str]) -> dict[str, Any]:
    """An action's result (id, summary, url) under the API's names or EventBridge's. While an approval is open its
    id is the token PutApprovalResult takes (botocore's PutApprovalResult docs, PARALLEL mode)."""
    ident = run.token if run.token and run.status == "InProgress" else run.external_id
    return {name: value for name, value in zip(names, (ident, run.summary, run.external_url), strict=True) if value}


def _codebuild_time(t: float) -> str:
    """CodeBuild's own timestamp format in its events: 'Sep 1, 2017 4:12:29 PM' (not ISO)."""
    d = datetime.fromtimestamp(t, UTC)
    return f"{d:%b} {d.day}, {d.year} {d.hour % 12 or 12}:{d:%M:%S} {'AM' if d.hour < 12 else 'PM'}"


class PipelineStandIn(JsonApi):
    def __init__(self, aws: AwsClients, events_queue_url: str, *, definition: Path = DEFINITION,
                 step_seconds: float = 1.0, faults: Faults | None = None,
                 deployer: Callable[[str, list[str], str], Awaitable[None]] | None = None,
                 notify_environ: dict[str, str] | None = None, deliver: bool = True) -> None:
        self.aws = aws
        self.queue_url = events_queue_url
        self.pipeline = json.loads(definition.read_text())["pipeline"]
        check_definition(self.pipeline)
        self.name = self.pipeline["name"]
        self.step = step_seconds
        self.faults = faults or Faults()
        self.deployer = deployer  # runs the real helm upgrade when the sandbox has a cluster
        self.notify_environ = notify_environ  # the buildspec's `erp-chatops notify` settings, when set
        # the Deploy project's STATE_TABLE, when set: its action checks the lock and the freeze with the
        # buildspec's own code (`erp-chatops ci deploy` -> build_steps.deploy_gate) before anything is deployed
        self.state_table: str | None = None
        self.deliver = deliver  # False: events are only recorded (the soak delivers them its own way)
        self.executions: dict[str, Execution] = {}
        self._tokens: dict[str, str] = {}  # clientRequestToken -> execution id
        self._stage_latest: dict[str, str] = {}  # stage -> execution id that entered it last
        self.emitted: list[dict[str, Any]] = []
        self.url = ""  # where it is served, once it is
        self._offset = 0.0  # the stand-in's clock runs this far ahead of the machine's (advance())

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the stand-in's clock forward (an approval's seven days, in a test or the sandbox)."""
        self._offset += seconds

    # --- the wire protocol (sandbox/json_api.py) ----------------------------------------

    def before(self, operation: str) -> web.Response | None:
        if self.faults.throttle > 0:  # the next N calls are throttled, as AWS does under load
            self.faults.throttle -= 1
            return error_response("ThrottlingException", "Rate exceeded")
        return None

    def _check_pipeline(self, name: Any) -> None:
        if name != self.name:
            raise PipelineError("PipelineNotFoundException", f"Account '{ACCOUNT}' does not have a pipeline with"
                                                             f" name '{name}'")

    def _execution(self, execution_id: Any) -> Execution:
        execution = self.executions.get(str(execution_id))
        if execution is None:
            raise PipelineError("PipelineExecutionNotFoundException",
                                f"Pipeline execution {execution_id} does not exist in pipeline {self.name}")
        return execution

    # --- operations ---------------------------------------------------------------------

    async def op_StartPipelineExecution(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_pipeline(body.get("name"))
        token = body.get("clientRequestToken")
        if token and token in self._tokens:
            return {"pipelineExecutionId": self._tokens[token]}  # idempotent, as AWS is
        declared = {v["name"]: v.get("defaultValue", "") for v in self.pipeline.get("variables", [])}
        for var in body.get("variables", []):
            if var.get("name") not in declared:
                raise PipelineError("ValidationException",
                                    f"Variable {var.get('name')} is not declared in the pipeline")
            declared[var["name"]] = var.get("value", "")
        revision = None
        sources = {a["name"]: a["actionTypeId"]["provider"] for st in self.pipeline["stages"] for a in st["actions"]
                   if a["actionTypeId"]["category"] == "Source"}
        for override in body.get("sourceRevisions", []):
            # botocore's model: SourceRevisionOverride (actionName, revisionType, revisionValue); a Git source
            # (CodeStarSourceConnection) takes a COMMIT_ID, the other types are for S3 and ECR sources
            if override.get("actionName") not in sources:
                raise PipelineError("ValidationException", f"{override.get('actionName')} is not a source action")
            if override.get("revisionType") != "COMMIT_ID" or not re.fullmatch(r"[0-9a-f]{40}",
                                                                               str(override.get("revisionValue"))):
                raise PipelineError("ValidationException", "A CodeStarSourceConnection source takes a COMMIT_ID"
                                                           " revision (a full commit SHA)")
            revision = str(override["revisionValue"])
        execution = self.start(declared, trigger_type="StartPipelineExecution",
                               trigger_detail=f"arn:aws:sts::{ACCOUNT}:assumed-role/erp-chatops/bot",
                               revision=revision)
        if token:
            self._tokens[token] = execution.id
        return {"pipelineExecutionId": execution.id}

    async def op_GetPipelineExecution(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_pipeline(body.get("pipelineName"))
        e = self._execution(body.get("pipelineExecutionId"))
        return {"pipelineExecution": {
            "pipelineName": self.name, "pipelineVersion": 1, "pipelineExecutionId": e.id, "status": e.status,
            **({"statusSummary": e.status_summary} if e.status_summary else {}),
            "artifactRevisions": [{"name": "SourceOutput", "revisionId": e.revision,
                                   "revisionSummary": f"Merge changes ({e.revision[:7]})",
                                   "revisionUrl": f"https://github.com/erp-team/erp-platform/commit/{e.revision}"}],
            "variables": [{"name": k, "resolvedValue": v} for k, v in e.variables.items()],
            "trigger": {"triggerType": e.trigger_type, "triggerDetail": e.trigger_detail},
            "executionMode": self.pipeline.get("executionMode", "PARALLEL"), "executionType": "STANDARD",
        }}

    async def op_ListPipelineExecutions(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_pipeline(body.get("pipelineName"))
        newest = sorted(self.executions.values(), key=lambda e: e.started, reverse=True)
        limit = int(body.get("maxResults", 100))
        first = int(body.get("nextToken") or 0)  # an opaque token to callers; an offset here
        page = newest[first:first + limit]
        more = {"nextToken": str(first + limit)} if first + limit < len(newest) else {}
        return {**more, "pipelineExecutionSummaries": [
            {"pipelineExecutionId": e.id, "status": e.status, "startTime": _epoch(e.started),
             "lastUpdateTime": _epoch(e.updated),
             "sourceRevisions": [{"actionName": "Source", "revisionId": e.revision}],
             "trigger": {"triggerType": e.trigger_type, "triggerDetail": e.trigger_detail},
             "executionMode": self.pipeline.get("executionMode", "PARALLEL")} for e in page]}

    @property
    def parallel(self) -> bool:
        """PARALLEL mode: botocore's PutApprovalResult documentation says the approval token "is not
        available" from GetPipelineState there; ListActionExecutions' externalExecutionId is the token."""
        return self.pipeline.get("executionMode", "SUPERSEDED") == "PARALLEL"

    async def op_GetPipeline(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_pipeline(body.get("name"))
        return {"pipeline": {**self.pipeline, "version": 1},
                "metadata": {"pipelineArn": self._pipeline_arn(), "created": _epoch(time.time() - 86400),
                             "updated": _epoch(time.time() - 86400)}}

    async def op_ListActionExecutions(self, body: dict[str, Any]) -> dict[str, Any]:
        """Newest first; `filter.pipelineExecutionId` keeps one execution's; maxResults 1..100, default 100, and
        nextToken only as returned, with PipelineExecutionNotFound / InvalidNextToken / Validation errors for
        the rest (botocore's CodePipeline model: ListActionExecutions' shapes and errors)."""
        self._check_pipeline(body.get("pipelineName"))
        limit = body.get("maxResults", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            raise PipelineError("ValidationException", "1 validation error detected: Value at 'maxResults' failed"
                                                       " to satisfy constraint: Member must have value between 1"
                                                       " and 100")
        wanted = (body.get("filter") or {}).get("pipelineExecutionId")
        executions = [self._execution(wanted)] if wanted else list(self.executions.values())
        runs = sorted(((e, run) for e in executions for run in e.actions.values()),
                      key=lambda pair: pair[1].started, reverse=True)
        first = 0
        if body.get("nextToken") is not None:
            token = str(body["nextToken"])
            if not token.startswith("page-") or not token[5:].isdigit():
                raise PipelineError("InvalidNextTokenException", "The next token was specified in an invalid"
                                                                 " format")
            first = int(token[5:])
        page = runs[first:first + limit]
        more = {"nextToken": f"page-{first + limit}"} if first + limit < len(runs) else {}
        return {**more, "actionExecutionDetails": [self._action_detail(e, run) for e, run in page]}

    def _action_detail(self, e: Execution, run: ActionRun) -> dict[str, Any]:
        declared = next(a for s in self.pipeline["stages"] if s["name"] == run.stage
                        for a in s["actions"] if a["name"] == run.action)
        result = _execution_result(run, ("externalExecutionId", "externalExecutionSummary", "externalExecutionUrl"))
        return {"pipelineExecutionId": e.id, "actionExecutionId": run.action_execution_id, "pipelineVersion": 1,
                "stageName": run.stage, "actionName": run.action, "startTime": _epoch(run.started),
                "lastUpdateTime": _epoch(run.updated), "status": run.status,
                "input": {"actionTypeId": declared["actionTypeId"],
                          "configuration": declared.get("configuration", {}),
                          "inputArtifacts": [{"name": a["name"]} for a in declared.get("inputArtifacts", [])]},
                "output": {"executionResult": result}}

    async def op_GetPipelineState(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_pipeline(body.get("name"))
        stages = []
        for stage in self.pipeline["stages"]:
            latest_id = self._stage_latest.get(stage["name"])
            latest = self.executions.get(latest_id) if latest_id else None
            actions = []
            for action in stage["actions"]:
                entry: dict[str, Any] = {"actionName": action["name"]}
                run = latest.actions.get((stage["name"], action["name"])) if latest else None
                if run is not None:
                    entry["latestExecution"] = {
                        "actionExecutionId": run.action_execution_id, "status": run.status,
                        "lastStatusChange": _epoch(run.updated),
                        **({"summary": run.summary} if run.summary else {}),
                        **({"token": run.token} if run.token and run.status == "InProgress"
                           and not self.parallel else {}),
                        **({"externalExecutionId": run.external_id} if run.external_id else {}),
                        **({"externalExecutionUrl": run.external_url} if run.external_url else {}),
                    }
                actions.append(entry)
            state: dict[str, Any] = {"stageName": stage["name"], "inboundTransitionState": {"enabled": True},
                                     "actionStates": actions}
            if latest is not None:
                runs = [r for (s, _), r in latest.actions.items() if s == stage["name"]]
                status = ("Failed" if any(r.status == "Failed" for r in runs) else
                          "InProgress" if any(r.status == "InProgress" for r in runs) else "Succeeded")
                state["latestExecution"] = {"pipelineExecutionId": latest.id, "status": status}
            stages.append(state)
        return {"pipelineName": self.name, "pipelineVersion": 1, "stageStates": stages,
                "created": _epoch(time.time() - 86400), "updated": _epoch(time.time())}

    async def op_PutApprovalResult(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_pipeline(body.get("pipelineName"))
        stage, action, token = body.get("stageName"), body.get("actionName"), body.get("token")
        result = body.get("result") or {}
        if result.get("status") not in ("Approved", "Rejected") or not result.get("summary"):
            raise PipelineError("ValidationException",
                                "result must have a summary and a status of Approved or Rejected")
        if not any(s["name"] == stage for s in self.pipeline["stages"]):
            raise PipelineError("StageNotFoundException", f"Stage {stage} not found in pipeline {self.name}")
        for e in self.executions.values():
            run = e.actions.get((str(stage), str(action)))
            if run is not None and run.token == token:
                if run.expired:  # botocore's model: "already received a response or has expired"
                    raise PipelineError("InvalidApprovalTokenException",
                                        f"The token for the approval request of action {action} is not valid")
                # botocore's model: ApprovalAlreadyCompletedException, "The approval action has already been
                # approved or rejected"; a request listed InProgress and unanswered takes the answer
                if run.status != "InProgress" or e.decision is None or e.decision.done():
                    raise PipelineError("ApprovalAlreadyCompletedException",
                                        "The approval request has already been completed")
                e.decision.set_result((result["status"], result["summary"]))
                return {"approvedAt": _epoch(self.now())}
        raise PipelineError("InvalidApprovalTokenException",
                            f"The token for the approval request of action {action} is not valid")

    async def op_StopPipelineExecution(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_pipeline(body.get("pipelineName"))
        e = self._execution(body.get("pipelineExecutionId"))
        if e.status != "InProgress":
            raise PipelineError("PipelineExecutionNotStoppableException",
                                f"Pipeline execution {e.id} is {e.status} and cannot be stopped")
        e.status, e.status_summary = "Stopping", body.get("reason") or "Stopped"
        if e.task is not None:
            e.task.cancel()
        return {"pipelineExecutionId": e.id}

    # --- running executions ---------------------------------------------------------------

    def start(self, variables: dict[str, str], *, trigger_type: str = "WebhookV2",
              trigger_detail: str = "arn:aws:codeconnections:ap-northeast-2:806332783810:connection/erp-github",
              revision: str | None = None) -> Execution:
        # a variable not given takes its declared default, as CodePipeline's own start does
        variables = {**{v["name"]: v.get("defaultValue", "") for v in self.pipeline.get("variables", [])}, **variables}
        execution_id = str(uuid.uuid4())
        revision = revision or hashlib.sha1(execution_id.encode()).hexdigest()  # noqa: S324 - a fake commit id
        execution = Execution(id=execution_id, variables=variables, revision=revision,
                              trigger_type=trigger_type, trigger_detail=trigger_detail)
        service = variables.get("SERVICE", "").strip()
        execution.services = list(SERVICES) if service in ("", "all") else [service]
        self.executions[execution_id] = execution
        execution.task = asyncio.ensure_future(self._run(execution))
        return execution

    def start_from_push(self, environment: str = "dev") -> Execution:
        """A GitHub push: no Slack variables, only what the pipeline declares by default."""
        declared = {v["name"]: v.get("defaultValue", "") for v in self.pipeline.get("variables", [])}
        declared["ENVIRONMENT"] = environment
        return self.start(declared)

    async def _emit(self, e: Execution, source: str, detail_type: str, detail: dict[str, Any],
                    resources: list[str]) -> None:
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
                 "account": ACCOUNT, "time": datetime.fromtimestamp(self.now(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "region": REGION,
                 "resources": resources, "detail": detail}
        self.emitted.append(event)
        e.events.append(event)
        if self.deliver:
            await self.aws.call("sqs", "send_message", QueueUrl=self.queue_url, MessageBody=json.dumps(event))

    def _pipeline_arn(self) -> str:
        return f"arn:aws:codepipeline:{REGION}:{ACCOUNT}:{self.name}"

    async def _pipeline_event(self, e: Execution, state: str) -> None:
        detail: dict[str, Any] = {"pipeline": self.name, "execution-id": e.id, "state": state, "version": 1.0,
                                  "pipeline-execution-attempt": 1.0,
                                  "start-time": datetime.fromtimestamp(e.started, UTC).isoformat()}
        if state == "STARTED":
            detail["execution-trigger"] = {"trigger-type": e.trigger_type, "trigger-detail": e.trigger_detail}
        await self._emit(e, "aws.codepipeline", "CodePipeline Pipeline Execution State Change", detail,
                         [self._pipeline_arn()])

    async def _stage_event(self, e: Execution, stage: str, state: str) -> None:
        await self._emit(e, "aws.codepipeline", "CodePipeline Stage Execution State Change",
                         {"pipeline": self.name, "execution-id": e.id, "stage": stage, "state": state,
                          "version": 1.0, "pipeline-execution-attempt": 1.0,
                          "start-time": datetime.fromtimestamp(e.started, UTC).isoformat()},
                         [self._pipeline_arn()])

    async def _action_event(self, e: Execution, run: ActionRun, action: dict[str, Any], state: str,
                            error_code: str | None = None) -> None:
        type_id = action["actionTypeId"]
        detail: dict[str, Any] = {
            "pipeline": self.name, "execution-id": e.id, "stage": run.stage, "action": run.action, "state": state,
            "region": REGION, "version": 1.0, "pipeline-execution-attempt": 1.0,
            "type": {"owner": type_id["owner"], "provider": type_id["provider"], "category": type_id["category"],
                     "version": type_id["version"]},
            "input-artifacts": [{"name": a["name"]} for a in action.get("inputArtifacts", [])],
        }
        if state in ("SUCCEEDED", "FAILED"):
            result = _execution_result(run, ("external-execution-id", "external-execution-summary",
                                             "external-execution-url"))
            if error_code:
                result["error-code"] = error_code
            detail["execution-result"] = result
        await self._emit(e, "aws.codepipeline", "CodePipeline Action Execution State Change", detail,
                         [self._pipeline_arn()])

    def _condition_skips(self, e: Execution, stage: dict[str, Any]) -> bool:
        for condition in stage.get("beforeEntry", {}).get("conditions", []):
            for rule in condition.get("rules", []):
                if rule["ruleTypeId"]["provider"] != "VariableCheck":
                    continue
                cfg = rule["configuration"]
                m = re.fullmatch(r"#\{variables\.(\w+)\}", cfg["Variable"])
                actual = e.variables.get(m.group(1), "") if m else cfg["Variable"]
                met = _variable_check(cfg["Operator"], actual, cfg["Value"])
                if not met and condition.get("result") == "SKIP":
                    return True
        return False

    async def _run(self, e: Execution) -> None:
        try:
            await self._pipeline_event(e, "STARTED")
            for stage in self.pipeline["stages"]:
                if self._condition_skips(e, stage):
                    # the API model's StageExecutionStatus has Skipped: the stage reports it and is passed over
                    await self._stage_event(e, stage["name"], "SKIPPED")
                    continue
                self._stage_latest[stage["name"]] = e.id
                await self._stage_event(e, stage["name"], "STARTED")
                ok = True
                for action in stage["actions"]:
                    run = ActionRun(stage=stage["name"], action=action["name"])
                    if action["actionTypeId"]["category"] == "Approval":
                        run.token = str(uuid.uuid4())  # the request exists once the action has started
                        # its seven days count from now, before anyone can see it (or move the clock on)
                        run.expires = self.now() + self._approval_lifetime(action)
                        # and it can be answered from the moment it can be seen (ListActionExecutions shows
                        # the token as soon as the run is listed, before its STARTED event is out)
                        e.decision = asyncio.get_running_loop().create_future()
                    e.actions[(stage["name"], action["name"])] = run
                    await self._action_event(e, run, action, "STARTED")
                    ok, error_code = await self._run_action(e, run, action)
                    run.status, run.updated = ("Succeeded" if ok else "Failed"), time.time()
                    await self._action_event(e, run, action, "SUCCEEDED" if ok else "FAILED", error_code)
                    if not ok:
                        break
                await self._stage_event(e, stage["name"], "SUCCEEDED" if ok else "FAILED")
                e.updated = time.time()
                if not ok:
                    e.status = "Failed"
                    await self._pipeline_event(e, "FAILED")
                    return
            e.status, e.updated = "Succeeded", time.time()
            await self._pipeline_event(e, "SUCCEEDED")
        except asyncio.CancelledError:
            for run in e.actions.values():
                if run.status == "InProgress":
                    run.status = "Abandoned"
            e.status, e.updated = "Stopped", time.time()
            with contextlib.suppress(Exception):
                await self._pipeline_event(e, "STOPPED")
        except Exception:
            log.exception("stand-in execution %s crashed", e.id)

    @staticmethod
    def _approval_lifetime(action: dict[str, Any]) -> float:
        return float(action.get("timeoutInMinutes", APPROVAL_DAYS * 24 * 60)) * 60

    async def _run_action(self, e: Execution, run: ActionRun, action: dict[str, Any]) -> tuple[bool, str | None]:
        category = action["actionTypeId"]["category"]
        if category == "Source":
            await asyncio.sleep(self.step)
            run.external_id = e.revision
            run.summary = f"Merge changes ({e.revision[:7]})"
            run.external_url = f"https://github.com/erp-team/erp-platform/commit/{e.revision}"
            return True, None
        if category == "Approval":
            if e.decision is None:  # made when the request was listed; an answer given since is kept
                e.decision = asyncio.get_running_loop().create_future()
            # the action's timeoutInMinutes, seven days by default (AWS's user guide: with no response within
            # seven days the pipeline fails), counted from the action's start
            expires = run.expires if run.expires is not None else self.now() + self._approval_lifetime(action)
            while not e.decision.done():
                if self.now() >= expires:
                    run.expired = True
                    return False, None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(e.decision), 0.05)
            status, summary = e.decision.result()
            run.summary = summary
            return status == "Approved", (None if status == "Approved" else "Rejected")
        return await self._run_codebuild(e, run, action)

    async def _progress(self, e: Execution, text: str) -> None:
        """What the buildspec's `erp-chatops notify` lines post, through the same code."""
        if self.notify_environ is None:
            return
        env = {**self.notify_environ, "PIPELINE_EXECUTION_ID": e.id,
               "SLACK_CHANNEL": e.variables.get("SLACK_CHANNEL", ""),
               "SLACK_THREAD_TS": e.variables.get("SLACK_THREAD_TS", "")}
        await asyncio.to_thread(Notifier(env).post, text)

    async def _run_codebuild(self, e: Execution, run: ActionRun, action: dict[str, Any]) -> tuple[bool, str | None]:
        project = action["configuration"]["ProjectName"]
        env_vars = json.loads(action["configuration"].get("EnvironmentVariables", "[]"))
        try:
            resolved = [{"name": v["name"], "type": v.get("type", "PLAINTEXT"), "value": self._resolve(e, v["value"])}
                        for v in env_vars]
        except Unresolvable as missing:
            run.summary = str(missing)
            return False, "JobFailed"
        given = {v["name"]: v["value"] for v in resolved}
        step = "Build" if project == "erp-build" else given.get("DEPLOY_PHASE", "deploy").capitalize()
        # what the Deploy project deploys: the tags its IMAGE_TAGS names (`service=tag[@digest]`, buildspec)
        pairs = [p.split("=", 1) for p in given.get("IMAGE_TAGS", "").split(",") if "=" in p]
        refs = [(svc.strip(), ref.strip()) for svc, ref in pairs]
        deploying = [(svc, ref.split("@", 1)[0]) for svc, ref in refs]
        gate_refused = False
        env_name = e.variables.get("ENVIRONMENT", "dev")
        await self._progress(e, f":hammer_and_wrench: {step} started for {env_name} (commit {e.revision[:7]})")
        if project == "erp-build":
            await self._progress(e, f"Building: {' '.join(e.services)}")
        build_uuid = str(uuid.uuid4())
        build_id = f"arn:aws:codebuild:{REGION}:{ACCOUNT}:build/{project}:{build_uuid}"
        group, stream = f"/aws/codebuild/{project}", build_uuid
        deep_link = (f"https://console.aws.amazon.com/cloudwatch/home?region={REGION}#logEvent:group={group};"
                     f"stream={stream}")
        run.external_id = f"{project}:{build_uuid}"
        run.external_url = (f"https://console.aws.amazon.com/codesuite/codebuild/{ACCOUNT}/projects/{project}/"
                            f"build/{project}%3A{build_uuid}/?region={REGION}")
        started = time.time()
        info = {"environment": {"image": "aws/codebuild/standard:7.0", "type": "LINUX_CONTAINER",
                                "compute-type": "BUILD_GENERAL1_MEDIUM", "privileged-mode": True,
                                "environment-variables": resolved},
                "initiator": f"codepipeline/{self.name}", "build-start-time": _codebuild_time(started),
                "source-version": e.revision,
                "logs": {"group-name": group, "stream-name": stream, "deep-link": deep_link},
                "timeout-in-minutes": 60, "queued-timeout-in-minutes": 480}

        async def build_event(status: str, phase: str) -> None:
            await self._emit(e, "aws.codebuild", "CodeBuild Build State Change",
                             {"build-status": status, "project-name": project, "build-id": build_id,
                              "additional-information": {**info, "build-complete": status != "IN_PROGRESS"},
                              "current-phase": phase, "current-phase-context": "[]", "version": "1"}, [build_id])

        await build_event("IN_PROGRESS", "SUBMITTED")
        failing = self._failure(e, project)
        if failing is None and project == "erp-deploy" and self.state_table:
            gate_env = {"STATE_TABLE": self.state_table, "PIPELINE_EXECUTION_ID": e.id}
            try:
                if given.get("DEPLOY_PHASE") == "promote":
                    await asyncio.to_thread(promotion_gate, gate_env, env_name, refs)
                await asyncio.to_thread(deploy_gate, gate_env, env_name)
            except StepFailed as refused:
                gate_refused = True
                failing = ("BUILD", "erp-chatops ci deploy --release erp --chart charts/erp --namespace"
                                    f" erp-{env_name}", f"deploy: {refused}")
        for phase in BUILD_PHASES:
            phase_start = time.time()
            await asyncio.sleep(self.step / 2)
            failed_here = failing is not None and phase == failing[0]
            await self._emit(e, "aws.codebuild", "CodeBuild Build Phase Change", {
                "completed-phase": phase, "completed-phase-status": "FAILED" if failed_here else "SUCCEEDED",
                "completed-phase-duration-seconds": max(0, round(time.time() - phase_start)),
                "completed-phase-context": (f"[COMMAND_EXECUTION_ERROR: Error while executing command: "
                                            f"{self._buildspec_block(phase, failing[1])}. Reason: exit status 1]")
                if failed_here and failing else "[: ]",
                "completed-phase-start": _codebuild_time(phase_start),
                "completed-phase-end": _codebuild_time(time.time()),
                "project-name": project, "build-id": build_id, "additional-information": info, "version": "1",
            }, [build_id])
            if failed_here:
                break
        # images are pushed and scanned unless docker build itself broke (the scan gate fails after the push)
        if project == "erp-build" and not any(s in self.faults.fail_build for s in e.services):
            await self._scan_events(e)
        if failing is None and project == "erp-build":
            for service in e.services:
                await self._progress(e, f":package: Built and pushed {service}-service:{e.revision[:7]}")
        if failing is None and project == "erp-deploy":
            await self._progress(e, f":ship: helm upgrade erp in erp-{env_name}: "
                                    + ", ".join(f"{s} `{t[:7]}`" for s, t in deploying))
        if failing is None and project == "erp-deploy" and self.deployer is not None:
            try:
                for ref in dict.fromkeys(r for _, r in refs):  # tag, or tag@digest: set both, as the buildspec
                    await self.deployer(env_name, [s for s, r in refs if r == ref], ref)
            except Exception as exc:
                failing = ("BUILD", f"erp-chatops ci deploy --release erp --namespace erp-{env_name}",
                           f"deploy: helm upgrade failed: {exc}")
        took = f"{time.time() - started:.0f}s"
        if project == "erp-deploy" and self.state_table and refs and not gate_refused:
            # what `erp-chatops ci deploy` records after helm, through the same code: the attempt, and the
            # deployed commit when it went well (a promoted image's own tag)
            env = {"STATE_TABLE": self.state_table, "PIPELINE_EXECUTION_ID": e.id}
            for service, ref in refs:
                tag, _, digest = ref.partition("@")
                await asyncio.to_thread(record_deploy, env, env_name, tag if digest else e.revision, [service],
                                        ok=failing is None, images={service: ref})
        if failing is not None:
            run.summary = "Build terminated with state: FAILED"  # all the pipeline's action event says
            await self._progress(e, f":x: {failing[2]}")
            await self._progress(e, f"{step} :x: failed in {took}")
            await build_event("FAILED", "COMPLETED")
            return False, "JobFailed"
        if project == "erp-deploy":
            await self._progress(e, f":white_check_mark: Deployed to {env_name} in {took}: rollout complete")
        await self._progress(e, f"{step} :white_check_mark: succeeded in {took}")
        run.summary = "Build succeeded" if project == "erp-build" else "helm upgrade --install succeeded"
        await build_event("SUCCEEDED", "COMPLETED")
        return True, None

    def _failure(self, e: Execution, project: str) -> tuple[str, str, str] | None:
        """(phase, command, what the buildspec itself says) where the injected fault makes this build fail.

        As CodeBuild reports it (AWS's CodeBuild and CodePipeline event references): the phase change
        event's context names the command (`COMMAND_EXECUTION_ERROR: Error while executing command: ...
        Reason: exit status 1`); the pipeline's action event only says `Build terminated with state:
        FAILED` with the error code JobFailed."""
        registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
        if project == "erp-build":
            broken = [s for s in e.services if s in self.faults.fail_build]
            if broken:
                return ("BUILD", f"docker build --tag {registry}/{repository_of(broken[0])}:{e.revision} "
                                 f"services/{broken[0]}",
                        f"docker build of {broken[0]} failed: ./gradlew bootJar: compilation failed")
            critical = [s for s in e.services if s in self.faults.critical_scan]
            if critical:
                return ("BUILD", f"erp-chatops ci scan-gate --tag {e.revision} --wait 900 {' '.join(e.services)}",
                        f"scan-gate: CRITICAL findings, not deploying: {repository_of(critical[0])}:"
                        f"{e.revision[:7]}")
        if project == "erp-deploy" and self.faults.fail_deploy:
            return ("BUILD", "erp-chatops ci deploy --release erp --chart charts/erp --namespace erp-"
                             f"{e.variables.get('ENVIRONMENT', 'dev')}",
                    "deploy: helm upgrade failed: UPGRADE FAILED: context deadline exceeded (rolled back)")
        return None

    @staticmethod
    def _buildspec_block(phase: str, command: str) -> str:
        """What CodeBuild quotes for a failed command: the buildspec's whole command as written (ours are
        multi-line blocks), when the repository's buildspec has one for the phase; else the command alone."""
        try:
            spec = yaml.safe_load(BUILDSPEC.read_text())
            commands = spec["phases"][phase.lower()]["commands"]
            return str(next((c for c in commands if command.split()[0] in c), commands[-1]))
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
            return command

    async def _scan_events(self, e: Execution) -> None:
        """Push each built image to ECR (moto), scan it, and emit ECR's scan event with the same counts."""
        for service in e.services:
            repo = repository_of(service)
            critical = 1 if service in self.faults.critical_scan else 0
            try:
                counts, digest = await asyncio.to_thread(publish_image, self.aws, repo, e.revision, critical)
                e.digests[service] = digest
            except Exception as exc:  # no such repository in this account: still emit a realistic event
                log.info("stand-in could not push %s: %s", repo, exc)
                counts = {"HIGH": 2, "MEDIUM": 5, "LOW": 3, **({"CRITICAL": critical} if critical else {})}
                digest = "sha256:" + hashlib.sha256(f"{repo}:{e.revision}".encode()).hexdigest()
            await self._emit(e, "aws.ecr", "ECR Image Scan",
                             {"scan-status": "COMPLETE", "repository-name": repo, "finding-severity-counts": counts,
                              "image-digest": digest, "image-tags": [e.revision]},
                             [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repo}"])

    @staticmethod
    def _resolve(e: Execution, value: str) -> str:
        def sub(m: re.Match[str]) -> str:
            namespace, name = m.group(1), m.group(2)
            if namespace == "codepipeline" and name == "PipelineExecutionId":
                return e.id
            if namespace == "variables" and name in e.variables:
                return e.variables[name]
            if namespace == "BuildVariables" and name == "IMAGE_TAGS":
                build = e.actions.get(("Build", "Build"))
                if build is None or build.status != "Succeeded":  # Build was skipped: it exported nothing
                    raise Unresolvable(f"Unable to resolve the variable #{{{namespace}.{name}}}: its action did"
                                       " not run in this execution")
                # as `erp-chatops ci image-tags` exports it: each pushed image by its digest
                return ",".join(f"{s}={e.revision}" + (f"@{e.digests[s]}" if s in e.digests else "")
                                for s in e.services)
            raise Unresolvable(f"Unable to resolve the variable #{{{namespace}.{name}}}")
        return re.sub(r"#\{(\w+)\.(\w+)\}", sub, value)
