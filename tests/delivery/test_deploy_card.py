"""The deploy card's state machine, fed with events recorded from a real stand-in run."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.aws.clients import AwsClients
from bot.delivery.card_lifecycle import card_phase
from bot.delivery.deploy_card import DeployCard, apply_event
from bot.delivery.pipeline_events import MalformedEvent, PipelineEvent, parse_codebuild_time, parse_event
from bot.slack.deploy_card_blocks import APPROVE_ACTION, REJECT_ACTION, ROLLBACK_ACTION, render_card
from sandbox.block_kit_limits import validate_blocks
from sandbox.codepipeline import PipelineStandIn
from tests.support import BackgroundLoop


def record_prod_execution(loop: BackgroundLoop, queue_url: str, approve: bool = True,
                          fail_deploy: bool = False) -> list[PipelineEvent]:
    stand_in = PipelineStandIn(AwsClients(), queue_url, step_seconds=0.01)
    stand_in.faults.fail_deploy = fail_deploy

    async def run() -> list[dict]:
        execution = stand_in.start({"SERVICE": "employee", "ENVIRONMENT": "prod", "REQUESTED_BY": "U0DEV1",
                                    "SLACK_CHANNEL": "C0PROD", "SLACK_THREAD_TS": "1.000001"},
                                   trigger_type="StartPipelineExecution", trigger_detail="test")
        while execution.decision is None:
            await asyncio.sleep(0.01)
        listed = await stand_in.op_ListActionExecutions({"pipelineName": "erp-pipeline",
                                                         "filter": {"pipelineExecutionId": execution.id}})
        [approval] = [d for d in listed["actionExecutionDetails"] if d["stageName"] == "Approval"]
        token = approval["output"]["executionResult"]["externalExecutionId"]  # PARALLEL mode's token
        await stand_in.op_PutApprovalResult({
            "pipelineName": "erp-pipeline", "stageName": "Approval", "actionName": "Approval", "token": token,
            "result": {"status": "Approved" if approve else "Rejected", "summary": "by test"}})
        assert execution.task is not None
        await execution.task
        return stand_in.emitted
    events = [parse_event(json.dumps(e)) for e in loop.run(run())]
    return [e for e in events if e is not None]


def new_card(execution_id: str) -> DeployCard:
    return DeployCard(execution_id=execution_id, pipeline="erp-pipeline", environment="prod", service="employee",
                      channel="C0PROD", requested_by="U0DEV1", ts="1.000001", needs_approval=True)


@pytest.fixture
def prod_events(background_loop: BackgroundLoop, aws_resources: dict[str, str]) -> list[PipelineEvent]:
    return record_prod_execution(background_loop, aws_resources["queue_url"])


def play(events: list[PipelineEvent]) -> DeployCard:
    card = new_card(next(e.execution_id for e in events if e.execution_id))
    for e in events:
        if e.kind == "scan":
            continue  # scans reach a card through the image index, tested end to end
        apply_event(card, e)
    return card


def test_in_order_events_make_a_succeeded_card(prod_events: list[PipelineEvent]):
    card = play(prod_events)
    assert card.status == "Succeeded" and card.commit
    assert [card.stage(s).state for s in ("Source", "Build", "Approval", "Deploy")] == ["SUCCEEDED"] * 4
    assert card.approval.decision == "Approved"
    assert card.links["build_log"].startswith("https://console.aws.amazon.com/cloudwatch/")
    kinds = {e.kind for e in prod_events}
    assert kinds == {"pipeline", "stage", "action", "build", "build_phase", "scan"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_with_duplicates_gives_the_same_card(prod_events: list[PipelineEvent], data: st.DataObject):
    shuffled = data.draw(st.permutations(prod_events))
    duplicates = data.draw(st.lists(st.sampled_from(prod_events), max_size=len(prod_events) // 2))
    mixed = list(shuffled)
    for i, dup in enumerate(duplicates):
        mixed.insert((i * 7) % (len(mixed) + 1), dup)
    expected, actual = play(prod_events), play(mixed)
    assert render_card(actual) == render_card(expected)
    assert (actual.status, actual.approval.decision) == ("Succeeded", "Approved")


def test_a_succeeded_card_never_shows_a_stage_still_running(prod_events: list[PipelineEvent]):
    """EventBridge does not order events: the execution's SUCCEEDED may be applied before the Deploy stage's
    own (the bot's pollers take them side by side). A succeeded execution finished every stage it started, so
    the card says so at once, not "Succeeded" beside an hourglass; the stage's own event then adds its time."""
    deploy_end = [e for e in prod_events if e.kind in ("stage", "action") and e.stage == "Deploy"
                  and e.state == "SUCCEEDED"]
    early = play([e for e in prod_events if e not in deploy_end])
    assert early.status == "Succeeded" and early.stage("Deploy").state != "SUCCEEDED"  # as it was read
    chips = render_card(early)[1][2]["elements"][0]["text"]
    assert ":white_check_mark: Deploy" in chips and ":hourglass_flowing_sand:" not in chips, chips
    assert render_card(play(prod_events)) == render_card(play([e for e in prod_events if e not in deploy_end]
                                                               + deploy_end))


def test_a_late_started_never_overwrites_succeeded(prod_events: list[PipelineEvent]):
    card = play(prod_events)
    late = [e for e in prod_events if e.state == "STARTED"]
    for e in late:
        apply_event(card, e)
    assert card.status == "Succeeded" and card.stage("Deploy").state == "SUCCEEDED"


def test_buttons_follow_the_phase(prod_events: list[PipelineEvent]):
    def actions(card: DeployCard) -> list[str]:
        _, blocks = render_card(card)
        return [el["action_id"] for b in blocks if b["type"] == "actions" for el in b["elements"]]

    upto_approval = next(i for i, e in enumerate(prod_events)
                         if e.kind == "action" and e.stage == "Approval" and e.state == "STARTED")
    waiting = play(prod_events[:upto_approval + 1])
    assert card_phase(waiting) == "awaiting_approval"
    assert actions(waiting)[:2] == [APPROVE_ACTION, REJECT_ACTION]
    waiting.approval.decision, waiting.approval.decided_by = "Approving", "U0APPR1"
    # the buttons stay while a decision is recorded: if its recorder died, a click takes over its lapsed claim
    assert card_phase(waiting) == "deciding" and actions(waiting)[:2] == [APPROVE_ACTION, REJECT_ACTION]
    assert "Recording <@U0APPR1>'s decision" in json.dumps(render_card(waiting)[1])
    done = play(prod_events)
    assert card_phase(done) == "succeeded" and actions(done) == ["open_pipeline", "open_logs"]
    failed = play(prod_events[:upto_approval])
    failed.status = "Failed"  # before Deploy (the build, the scan gate): nothing reached prod
    assert card_phase(failed) == "failed" and ROLLBACK_ACTION not in actions(failed)
    failed.approval.decision = "Rejected"  # refused at the gate: nothing reached prod, nothing to roll back
    assert card_phase(failed) == "rejected" and ROLLBACK_ACTION not in actions(failed)
    deploy_failed = play([e for e in prod_events if not (e.kind == "pipeline" and e.state == "SUCCEEDED")])
    deploy_failed.status, deploy_failed.failure = "Failed", {"stage": "Deploy", "summary": "rollout failed"}
    # this execution changed the cluster: the button is offered (the click checks helm's history)
    assert card_phase(deploy_failed) == "deploy_failed" and ROLLBACK_ACTION in actions(deploy_failed)
    [button] = [el for b in render_card(deploy_failed)[1] if b["type"] == "actions" for el in b["elements"]
                if el["action_id"] == ROLLBACK_ACTION]
    assert button["value"] == f"employee prod {deploy_failed.execution_id}"


def test_cards_stay_within_block_kit_limits(prod_events: list[PipelineEvent]):
    for n in range(1, len(prod_events) + 1):
        _, blocks = render_card(play(prod_events[:n]))
        assert validate_blocks(blocks) == []
    card = play(prod_events)
    card.status, card.failure = "Failed", {"stage": "Build", "summary": "x" * 10_000}
    card.approval.decision, card.approval.reason = "Rejected", "y" * 10_000
    _, blocks = render_card(card)
    assert validate_blocks(blocks) == []


def test_codebuild_timestamps_are_not_iso():
    assert parse_codebuild_time("Sep 1, 2017 4:12:29 PM") == datetime(2017, 9, 1, 16, 12, 29, tzinfo=UTC)
    assert parse_codebuild_time("Dec 31, 2026 12:05:00 AM") == datetime(2026, 12, 31, 0, 5, tzinfo=UTC)
    assert parse_codebuild_time("2017-09-01T16:12:29Z") is None


@pytest.mark.parametrize(("body", "reason"), [
    ("not json", "not JSON"),
    ("[1, 2]", "not an EventBridge event"),
    ('{"detail-type": "CodePipeline Stage Execution State Change"}', "no EventBridge `id`"),
    ('{"id": "1", "detail-type": "CodePipeline Stage Execution State Change", "time": "2026-01-01T00:00:00Z",'
     ' "detail": {"state": "STARTED", "execution-id": "e"}}', "`detail.stage` is missing"),
    ('{"id": "1", "detail-type": "CodePipeline Pipeline Execution State Change", "time": "yesterday",'
     ' "detail": {"state": "STARTED", "execution-id": "e"}}', "`time` is not an ISO time"),
    ('{"id": "1", "detail-type": "CodeBuild Build State Change", "time": "2026-01-01T00:00:00Z", "detail": []}',
     "without a `detail` object"),
    ("x" * 300_000, "larger than any event"),
])
def test_malformed_messages_say_why(body: str, reason: str):
    with pytest.raises(MalformedEvent, match=None) as err:
        parse_event(body)
    assert reason in str(err.value)


def test_unknown_event_types_are_ignored_and_inspector_arns_read():
    assert parse_event('{"id": "1", "detail-type": "EC2 Instance State-change Notification", "detail": {}}') is None
    event = parse_event(json.dumps({
        "id": "2", "detail-type": "Inspector2 Scan", "time": "2026-01-01T00:00:00Z",
        "detail": {"scan-status": "INITIAL_SCAN_COMPLETE",
                   "repository-name": "arn:aws:ecr:ap-northeast-2:806332783810:repository/erp/employee-service",
                   "finding-severity-counts": {"CRITICAL": 0, "HIGH": 1, "TOTAL": 1}}}))
    assert event is not None and event.detail["repository-name"] == "erp/employee-service"


def _scan_event(status: str, counts: dict[str, int], detail_type: str = "ECR Image Scan") -> PipelineEvent:
    event = parse_event(json.dumps({
        "id": f"scan-{status}", "detail-type": detail_type, "time": "2026-01-01T00:00:00Z",
        "detail": {"scan-status": status, "repository-name": "erp/employee-service",
                   "finding-severity-counts": counts, "image-tags": ["abc1234def"]}}))
    assert event is not None
    return event


def test_a_failed_scan_on_the_card_never_reads_as_passing():
    card = new_card("exec-scan")
    [note] = apply_event(card, _scan_event("FAILED", {}))
    assert "Scan failed" in note.text and "passes" not in note.text.lower()
    assert card.scans["erp/employee-service"].blocking
    shown = json.dumps(render_card(card)[1])
    assert "scan failed" in shown and "0 critical" not in shown


def test_enhanced_scans_count_as_finished():
    card = new_card("exec-inspector")
    [note] = apply_event(card, _scan_event("INITIAL_SCAN_COMPLETE", {"HIGH": 1, "TOTAL": 1}, "Inspector2 Scan"))
    assert "passes the gate" in note.text and not card.scans["erp/employee-service"].blocking


CONTEXT = ("COMMAND_EXECUTION_ERROR: Error while executing command: docker build --tag "
           "806332783810.dkr.ecr.ap-northeast-2.amazonaws.com/erp/employee-service:abc1234 services/employee. "
           "Reason: exit status 1")
LOG = "https://console.aws.amazon.com/cloudwatch/home?region=ap-northeast-2#logEvent:group=/aws/codebuild/erp-build"


def _build_failure_events() -> list[PipelineEvent]:
    """As CodePipeline and CodeBuild report a failed build (AWS's event reference): the action says only
    `Build terminated with state: FAILED` / JobFailed; the phase change carries what failed."""
    env = {"environment": {"environment-variables": [
        {"name": "PIPELINE_EXECUTION_ID", "value": "exec-fail", "type": "PLAINTEXT"},
        {"name": "DEPLOY_PHASE", "value": "build", "type": "PLAINTEXT"}]},
        "logs": {"deep-link": LOG}, "initiator": "codepipeline/erp-pipeline"}
    bodies = [
        {"id": "phase", "detail-type": "CodeBuild Build Phase Change", "time": "2026-01-01T00:01:00Z",
         "detail": {"completed-phase": "BUILD", "completed-phase-status": "FAILED", "build-id": "b:1",
                    "completed-phase-context": f"[{CONTEXT}]", "project-name": "erp-build",
                    "additional-information": env}},
        {"id": "action", "detail-type": "CodePipeline Action Execution State Change", "time": "2026-01-01T00:01:05Z",
         "detail": {"pipeline": "erp-pipeline", "execution-id": "exec-fail", "stage": "Build", "action": "Build",
                    "state": "FAILED", "execution-result": {
                        "external-execution-summary": "Build terminated with state: FAILED",
                        "error-code": "JobFailed",
                        "external-execution-url": "https://console.aws.amazon.com/codesuite/codebuild/x"}}},
        {"id": "pipeline", "detail-type": "CodePipeline Pipeline Execution State Change",
         "time": "2026-01-01T00:01:06Z",
         "detail": {"pipeline": "erp-pipeline", "execution-id": "exec-fail", "state": "FAILED"}},
    ]
    return [e for e in (parse_event(json.dumps(b)) for b in bodies) if e is not None]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_failed_build_shows_the_phase_context_not_the_generic_summary(order: tuple[int, ...]):
    events = _build_failure_events()
    card = new_card("exec-fail")
    notes = [n for i in order for n in apply_event(card, events[i])]
    shown = json.dumps(render_card(card)[1])
    assert "exit status 1" in shown and "Build terminated with state" not in shown
    text = " ".join(n.text for n in notes)
    assert text.count("Reason: exit status 1") == 1, text  # the context, once, whichever event came first
    assert "Build failed" in text and LOG in text


@pytest.mark.parametrize("posted_first", [False, True])
def test_a_failure_note_not_yet_posted_gets_the_phase_context_instead_of_a_second_note(posted_first: bool):
    phase, action, _ = _build_failure_events()
    card = new_card("exec-fail")
    notes = apply_event(card, action)  # the action's event first: "Build terminated with state: FAILED"
    card.outbox.extend([n.key, n.text] for n in notes)  # as the handler records them
    if posted_first:  # Slack already took it (the outbox entry was claimed and cleared)
        card.outbox.clear()
    later = apply_event(card, phase)
    if posted_first:
        assert [n.key for n in later] == ["context:Build"] and "Reason: exit status 1" in later[0].text
    else:
        assert later == [] and len(card.outbox) == 1
        assert "Reason: exit status 1" in card.outbox[0][1] and "Build terminated" not in card.outbox[0][1]


def test_a_skipped_approval_stage_is_shown_as_skipped():
    card = new_card("exec-dev")
    card.environment, card.needs_approval = "dev", False
    event = parse_event(json.dumps({
        "id": "skip", "detail-type": "CodePipeline Stage Execution State Change", "time": "2026-01-01T00:01:00Z",
        "detail": {"pipeline": "erp-pipeline", "execution-id": "exec-dev", "stage": "Approval", "state": "SKIPPED"}}))
    assert event is not None
    apply_event(card, event)
    shown = json.dumps(render_card(card)[1])
    assert "Approval skipped" in shown and ":white_circle: Approval" not in shown


def _approval_event(state: str, at: str) -> PipelineEvent:
    event = parse_event(json.dumps({
        "id": f"approval-{state}-{at}", "detail-type": "CodePipeline Action Execution State Change", "time": at,
        "detail": {"pipeline": "erp-pipeline", "execution-id": "exec-wait", "stage": "Approval", "action": "Approval",
                   "state": state, "execution-result": {} if state == "STARTED" else {"external-execution-summary": ""}}}))
    assert event is not None
    return event


@pytest.mark.parametrize("first", ["STARTED", "FAILED"])
def test_an_approval_failed_after_seven_days_is_expired_in_any_order(first: str):
    started, failed = _approval_event("STARTED", "2026-01-01T00:00:00Z"), _approval_event("FAILED", "2026-01-08T00:00:02Z")
    card = new_card("exec-wait")
    notes = [n for e in ((started, failed) if first == "STARTED" else (failed, started)) for n in apply_event(card, e)]
    assert card.approval.decision == "Expired"
    assert [n.key for n in notes if n.key == "approval-expired"] == ["approval-expired"]
    assert not [n for n in notes if n.key == "approval"] or first == "STARTED"  # a late STARTED pings nobody


def test_a_console_rejection_within_seven_days_is_a_rejection():
    card = new_card("exec-wait")
    for e in (_approval_event("STARTED", "2026-01-01T00:00:00Z"), _approval_event("FAILED", "2026-01-06T12:00:00Z")):
        apply_event(card, e)
    assert card.approval.decision == "Rejected" and card.approval.decided_by is None


def test_a_console_rejection_is_not_called_expired_when_the_approval_started_late():
    """The pipeline started 40 minutes before its approval; the console rejected it 6d23h30m into the approval.
    Until the approval's own start is known, nothing is judged by the pipeline's start (review finding)."""
    card = new_card("exec-wait")
    card.started = "2026-01-01T00:00:00+00:00"
    rejected = _approval_event("FAILED", "2026-01-08T00:10:00Z")
    rejected.detail["execution-result"]["external-execution-summary"] = "not this week"
    apply_event(card, rejected)
    assert card.approval.decision == "Rejected" and card.approval.reason == "not this week"
    apply_event(card, _approval_event("STARTED", "2026-01-01T00:40:00Z"))
    assert card.approval.decision == "Rejected" and card.approval.reason == "not this week"


def test_an_interrupted_slack_claim_does_not_take_the_pipelines_outcome():
    """An approver's click was claimed (Approving) and the pod died before PutApprovalResult; the approval then
    expired. The card must not say the approver rejected it."""
    card = new_card("exec-wait")
    apply_event(card, _approval_event("STARTED", "2026-01-01T00:00:00Z"))
    card.approval.decision, card.approval.decided_by = "Approving", "U0APPR1"
    apply_event(card, _approval_event("FAILED", "2026-01-08T00:00:05Z"))
    assert card.approval.decision == "Expired" and card.approval.decided_by is None


BLOCK = ('set -eo pipefail\nif [ "$DEPLOY_PHASE" = build ]; then\n  for service in $BUILT_SERVICES; do\n'
         '    docker build --tag "$image" "services/$service"\n  done\nfi\n')


@pytest.mark.parametrize("status", ["FAILED", "FAULT", "TIMED_OUT"])
def test_a_phase_context_quoting_a_whole_script_block_is_summarised(status: str):
    """CodeBuild quotes the command as the buildspec wrote it: ours are multi-line blocks."""
    events = _build_failure_events()
    events[0].detail["completed-phase-status"] = status
    events[0].detail["completed-phase-context"] = (f"[COMMAND_EXECUTION_ERROR: Error while executing command: {BLOCK}."
                                                   " Reason: exit status 1]")
    phase = parse_event(json.dumps({"id": "p2", "detail-type": "CodeBuild Build Phase Change",
                                    "time": "2026-01-01T00:01:00Z", "detail": events[0].detail}))
    assert phase is not None
    card = new_card("exec-fail")
    notes = [n for e in (phase, events[1], events[2]) for n in apply_event(card, e)]
    shown = json.dumps(render_card(card)[1])
    assert "exit status 1" in shown and "set -eo pipefail" not in shown and "docker build" in shown
    text = " ".join(n.text for n in notes)
    assert "set -eo pipefail" not in text and "docker build" in text and "exit status 1" in text


def _event(detail_type: str, detail: dict, at: str) -> PipelineEvent:
    event = parse_event(json.dumps({"id": f"{detail_type}-{at}-{detail.get('state')}", "detail-type": detail_type,
                                    "time": at, "detail": {"pipeline": "erp-pipeline", "execution-id": "exec-retry",
                                                           **detail}}))
    assert event is not None
    return event


def test_retry_failed_stage_moves_the_card_back_to_running_and_a_second_failure_is_noted():
    card = new_card("exec-retry")
    action = "CodePipeline Action Execution State Change"
    stage, pipeline = "CodePipeline Stage Execution State Change", "CodePipeline Pipeline Execution State Change"
    first = [_event(stage, {"stage": "Build", "state": "STARTED"}, "2026-01-01T00:00:00Z"),
             _event(action, {"stage": "Build", "action": "Build", "state": "FAILED",
                             "execution-result": {"external-execution-summary": "boom"}}, "2026-01-01T00:01:00Z"),
             _event(stage, {"stage": "Build", "state": "FAILED"}, "2026-01-01T00:01:00Z"),
             _event(pipeline, {"state": "FAILED"}, "2026-01-01T00:01:01Z")]
    notes = [n for e in first for n in apply_event(card, e)]
    assert card_phase(card) == "failed" and [n.key for n in notes] == ["failed:Build"]
    # someone pressed "Retry failed stage" in the console
    retried = [_event(pipeline, {"state": "RESUMED"}, "2026-01-01T00:05:00Z"),
               _event(stage, {"stage": "Build", "state": "STARTED"}, "2026-01-01T00:05:01Z")]
    notes = [n for e in retried for n in apply_event(card, e)]
    assert card_phase(card) == "running" and card.stage("Build").state == "STARTED"
    assert ROLLBACK_ACTION not in json.dumps(render_card(card)[1])
    assert [n.key for n in notes] == ["resumed:2026-01-01T00:05:00+00:00"]
    again = [_event(action, {"stage": "Build", "action": "Build", "state": "FAILED",
                             "execution-result": {"external-execution-summary": "boom again"}}, "2026-01-01T00:06:00Z"),
             _event(pipeline, {"state": "FAILED"}, "2026-01-01T00:06:01Z")]
    notes = [n for e in again for n in apply_event(card, e)]
    assert card_phase(card) == "failed" and any("boom again" in n.text for n in notes)
    # a duplicate of the first failure, delivered late, changes nothing
    assert apply_event(card, first[3]) == [] and card_phase(card) == "failed"


def test_what_the_repository_wrote_reaches_the_thread_as_text_and_links_only_to_aws():
    """Issue 18 item 8: CodeBuild quotes the buildspec's commands, which anyone who can push writes; the failure
    notes showed them as markup (a channel ping, a link behind a label), and any URL an event named was a link."""
    card = new_card("exec-hostile")
    action = "CodePipeline Action Execution State Change"
    hostile = 'COMMAND_EXECUTION_ERROR: Error while executing command: echo "<!channel> <https://evil.example|AWS>". ' \
              "Reason: exit status 1"
    notes = apply_event(card, _event(action, {
        "stage": "Build", "action": "Build", "state": "FAILED",
        "execution-result": {"external-execution-summary": hostile,
                             "external-execution-url": "https://evil.example/login"}}, "2026-01-01T00:01:00Z"))
    [note] = [n for n in notes if n.key == "failed:Build"]
    assert "&lt;!channel&gt;" in note.text and "<!channel>" not in note.text and "evil.example/login" not in note.text
    card.links["build_log"] = "https://evil.example/console"
    assert "evil.example" not in json.dumps(render_card(card)[1])  # no Logs button to it
    card.links["build_log"] = "https://console.aws.amazon.com/cloudwatch/home?region=ap-northeast-2#logEvent:group=x"
    assert "open_logs" in json.dumps(render_card(card)[1])


def test_ci_can_add_lines_to_a_thread_and_nothing_else():
    """Review of issue 18 item 2: CI may send to the progress queue only; what arrives there is read as progress
    lines and nothing else (a forged "approval succeeded" is not ours), and AWS's queue takes no progress."""
    from bot.delivery.pipeline_events import EventScope, NotOurs

    scope_events = EventScope(pipeline="erp-pipeline", repositories=frozenset())
    scope_progress = EventScope(pipeline="erp-pipeline", repositories=frozenset(), kinds=frozenset({"progress"}))
    forged = json.dumps({"id": "1", "detail-type": "CodePipeline Action Execution State Change",
                         "time": "2026-01-01T00:00:00Z", "detail": {"pipeline": "erp-pipeline", "execution-id": "e",
                                                                    "stage": "Approval", "action": "Approval",
                                                                    "state": "SUCCEEDED"}})
    line = json.dumps({"id": "2", "detail-type": "ERP Deploy Progress", "time": "2026-01-01T00:00:00Z",
                       "detail": {"execution-id": "e", "text": "Build started"}})
    with pytest.raises(NotOurs):
        parse_event(forged, scope_progress)
    with pytest.raises(NotOurs):
        parse_event(line, scope_events)
    assert parse_event(forged, scope_events) is not None and parse_event(line, scope_progress) is not None
    # a flood of lines stays bounded: the card must stay well under DynamoDB's item size
    card = new_card("e")
    for n in range(80):
        apply_event(card, parse_event(json.dumps({"id": f"p{n}", "detail-type": "ERP Deploy Progress",
                                                  "time": "2026-01-01T00:00:00Z",
                                                  "detail": {"execution-id": "e", "text": "&" * 3000}})))
    progress_notes = [n for n in card.notes if n.startswith("progress:")]
    assert len(progress_notes) == 60 and len(card.to_json()) < 300_000
