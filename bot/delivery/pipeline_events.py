"""EventBridge events from the queue, parsed into what the deploy card needs.

Shapes are AWS's documented ones: CodePipeline pipeline/stage/action execution
state changes, CodeBuild build state and phase changes (whose own timestamps
look like 'Sep 1, 2017 4:12:29 PM', not ISO), and ECR image scans.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.config import Config

PIPELINE = "CodePipeline Pipeline Execution State Change"
STAGE = "CodePipeline Stage Execution State Change"
ACTION = "CodePipeline Action Execution State Change"
BUILD = "CodeBuild Build State Change"
BUILD_PHASE = "CodeBuild Build Phase Change"
ECR_SCAN = "ECR Image Scan"
INSPECTOR_SCAN = "Inspector2 Scan"
PROGRESS = "ERP Deploy Progress"  # the buildspec's own progress lines (bot/ci/notify.py), for the card's thread
ALARM = "CloudWatch Alarm State Change"  # a service's error alarm (the Terraform module's erp-<env>-<svc>-errors)
KNOWN = {PIPELINE: "pipeline", STAGE: "stage", ACTION: "action", BUILD: "build", BUILD_PHASE: "build_phase",
         ECR_SCAN: "scan", INSPECTOR_SCAN: "scan", PROGRESS: "progress", ALARM: "alarm"}


def alarm_name(environment: str, service: str) -> str:
    """The error alarm of a service in an environment, as infra/terraform names it."""
    return f"erp-{environment}-{service}-errors"
MAX_PROGRESS_TEXT = 3000
MAX_BODY = 256 * 1024  # SQS's own limit; anything bigger is not ours


class MalformedEvent(Exception):
    """The message is not an event we can read; it goes to the dead-letter queue."""


QUEUE_ACCOUNT = re.compile(r"^https?://[^/]+/(\d{12})/")  # an SQS queue URL names its account


@dataclass(frozen=True)
class EventScope:
    """Which events are ours. EventBridge buses and rules are shared in real accounts, so the queue also gets
    other pipelines', other CodeBuild projects', other repositories' and other accounts' events: those are
    not ours (dropped quietly), while an event of ours that cannot be read is malformed (dead-lettered)."""

    pipeline: str
    repositories: frozenset[str]
    account: str | None = None  # None: the queue's URL does not say (any account)
    # the kinds this queue carries: AWS's events on the events queue (EventBridge's rules alone may send
    # there), the buildspec's progress lines on the progress queue (CI may send there, and nowhere else)
    kinds: frozenset[str] = frozenset(k for k in KNOWN.values() if k != "progress")
    alarms: frozenset[str] = frozenset()  # the error alarms of our services, by name

    @classmethod
    def of(cls, config: Config) -> EventScope:
        match = QUEUE_ACCOUNT.match(config.events_queue_url)
        return cls(pipeline=config.pipeline,
                   repositories=frozenset(s.image_repository for s in config.services.values()),
                   account=match.group(1) if match else None,
                   alarms=frozenset(alarm_name(e, s) for e in config.environments for s in config.services))

    @classmethod
    def progress_of(cls, config: Config) -> EventScope:
        return cls(pipeline=config.pipeline, repositories=frozenset(), kinds=frozenset({"progress"}))

    def why_not_ours(self, kind: str, envelope: dict[str, Any], detail: dict[str, Any]) -> str | None:
        """Why this event belongs to someone else; None when it is ours (or says too little to tell)."""
        if kind not in self.kinds:  # e.g. a "pipeline event" sent by CI to its progress queue
            return f"a {kind} event on a queue that does not carry them"
        account = envelope.get("account")
        if self.account and isinstance(account, str) and account != self.account:
            return f"account {account}"
        if kind in ("pipeline", "stage", "action"):
            pipeline = detail.get("pipeline")
            if isinstance(pipeline, str) and pipeline != self.pipeline:
                return f"pipeline {pipeline}"
        elif kind in ("build", "build_phase"):
            # CodeBuild says who started a build: "codepipeline/<pipeline>" for a pipeline's action
            initiator = (detail.get("additional-information") or {}).get("initiator") \
                if isinstance(detail.get("additional-information"), dict) else None
            if isinstance(initiator, str) and initiator != f"codepipeline/{self.pipeline}":
                return f"a build started by {initiator}"
        elif kind == "alarm":
            name = detail.get("alarmName")
            if isinstance(name, str) and name not in self.alarms:
                return f"alarm {name[:80]}"
        elif kind == "scan":
            repository = detail.get("repository-name")
            if isinstance(repository, str) and repository.startswith("arn:"):  # Inspector names it by ARN
                arn_account = repository.split(":")[4] if repository.count(":") >= 5 else None
                if self.account and arn_account and arn_account != self.account:
                    return f"account {arn_account}"
                repository = repository.split(":repository/", 1)[-1]
            if isinstance(repository, str) and repository not in self.repositories:
                return f"repository {repository}"
        return None


@dataclass(frozen=True)
class PipelineEvent:
    event_id: str
    kind: str  # pipeline | stage | action | build | build_phase | scan | progress | alarm
    time: datetime
    state: str  # STARTED, SUCCEEDED, FAILED, IN_PROGRESS, COMPLETE ...
    execution_id: str | None = None
    stage: str | None = None
    action: str | None = None
    detail: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def environment_variables(self) -> dict[str, str]:
        env = self.detail.get("additional-information", {}).get("environment", {})
        return {v.get("name", ""): str(v.get("value", "")) for v in env.get("environment-variables", [])
                if isinstance(v, dict)}


def parse_codebuild_time(text: str | None) -> datetime | None:
    """'Sep 1, 2017 4:12:29 PM' (CodeBuild's event format, UTC) -> datetime."""
    if not text:
        return None
    try:
        return datetime.strptime(text, "%b %d, %Y %I:%M:%S %p").replace(tzinfo=UTC)
    except ValueError:
        return None


def _iso(text: Any) -> datetime:
    if not isinstance(text, str):
        raise MalformedEvent("the envelope has no `time`")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedEvent(f"`time` is not an ISO time: {text[:40]!r}") from None


def _require(detail: dict[str, Any], key: str) -> str:
    value = detail.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"`detail.{key}` is missing")
    return value


class NotOurs(Exception):
    """An event of someone else's (another pipeline, project, repository or account): dropped quietly."""


def parse_event(body: str, scope: EventScope | None = None) -> PipelineEvent | None:
    """The event in an SQS message body; None for an event type the bot does not handle. With a scope,
    raises NotOurs for another pipeline's, project's, repository's or account's event."""
    if len(body) > MAX_BODY:
        raise MalformedEvent(f"message of {len(body)} bytes is larger than any event")
    try:
        envelope = json.loads(body)
    except ValueError:
        raise MalformedEvent("the message body is not JSON") from None
    if not isinstance(envelope, dict):
        raise MalformedEvent("the message body is not an EventBridge event")
    detail_type, detail, event_id = envelope.get("detail-type"), envelope.get("detail"), envelope.get("id")
    if not isinstance(detail_type, str) or not isinstance(event_id, str) or not event_id:
        raise MalformedEvent("the message has no EventBridge `id` and `detail-type`")
    kind = KNOWN.get(detail_type)
    if kind is None:
        return None
    if not isinstance(detail, dict):
        raise MalformedEvent(f"{detail_type} without a `detail` object")
    if scope is not None:
        foreign = scope.why_not_ours(kind, envelope, detail)
        if foreign:
            raise NotOurs(foreign)
    when = _iso(envelope.get("time"))
    if kind in ("pipeline", "stage", "action"):
        return PipelineEvent(
            event_id=event_id, kind=kind, time=when, state=_require(detail, "state"),
            execution_id=_require(detail, "execution-id"),
            stage=_require(detail, "stage") if kind != "pipeline" else None,
            action=_require(detail, "action") if kind == "action" else None,
            detail=detail)
    if kind == "progress":
        text = _require(detail, "text")
        if len(text) > MAX_PROGRESS_TEXT:
            raise MalformedEvent(f"a progress line of {len(text)} characters")
        return PipelineEvent(event_id=event_id, kind=kind, time=when, state="NOTE",
                             execution_id=_require(detail, "execution-id"), detail={"text": text})
    if kind == "alarm":  # AWS's CloudWatch event reference: detail.alarmName, detail.state.value/reason/timestamp
        _require(detail, "alarmName")
        state = detail.get("state")
        if not isinstance(state, dict) or not isinstance(state.get("value"), str):
            raise MalformedEvent("`detail.state.value` is missing")
        return PipelineEvent(event_id=event_id, kind=kind, time=when, state=state["value"], detail=detail)
    if kind in ("build", "build_phase"):
        _require(detail, "build-id")
        event = PipelineEvent(event_id=event_id, kind=kind, time=when,
                              state=str(detail.get("build-status") or detail.get("completed-phase-status") or ""),
                              detail=detail)
        execution_id = event.environment_variables.get("PIPELINE_EXECUTION_ID") or None
        return PipelineEvent(event_id=event_id, kind=kind, time=when, state=event.state,
                             execution_id=execution_id, detail=detail)
    # scans: ECR's basic scan names the repository; Inspector's names it by ARN
    if detail_type == INSPECTOR_SCAN:
        arn = detail.get("repository-name", "")
        if isinstance(arn, str) and arn.startswith("arn:"):
            detail = {**detail, "repository-name": arn.split(":repository/", 1)[-1]}
    _require(detail, "repository-name")
    return PipelineEvent(event_id=event_id, kind="scan", time=when, state=str(detail.get("scan-status", "")),
                         detail=detail)
