"""The card's lifecycle table (bot/delivery/card_lifecycle.py) checked against the code that moves cards.

Real executions' events, recorded from the CodePipeline stand-in, are applied in any order, any number
of times, interleaved with approval clicks that win, lose, lapse or fail; every phase change must be one
the table lists, the buttons must be the phase's, and each thread note must go out once and only when
it is true."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.aws.clients import AwsClients
from bot.delivery.card_lifecycle import (
    FINAL,
    PHASE_BUTTONS,
    PHASES,
    TRANSITIONS,
    allowed,
    card_phase,
    claim,
    record_decision,
    release_claim,
)
from bot.delivery.deploy_card import apply_event
from bot.delivery.pipeline_events import PipelineEvent
from bot.slack.deploy_card_blocks import APPROVE_ACTION, REJECT_ACTION, ROLLBACK_ACTION, render_card
from sandbox.seed import create_events_queue
from tests.delivery.test_deploy_card import _event, new_card, record_prod_execution
from tests.support import BackgroundLoop

BUTTON_ACTIONS = {"approve": APPROVE_ACTION, "reject": REJECT_ACTION, "rollback": ROLLBACK_ACTION}
LEASE = timedelta(seconds=60)
RUNS = {"approved": ("succeeded", "Approved"), "rejected": ("rejected", "Rejected"),
        "deploy_failed": ("deploy_failed", "Approved"), "rejected_then_retried": ("succeeded", None)}


def rejected_then_retried() -> list[PipelineEvent]:
    """Rejected in the console, then "Retry failed stage" (RESUMED) and approved: AWS's event shapes, as
    tests/delivery/test_deploy_card.py builds them (the stand-in does not retry stages)."""
    action = "CodePipeline Action Execution State Change"
    stage, pipeline = "CodePipeline Stage Execution State Change", "CodePipeline Pipeline Execution State Change"
    t = "2026-01-01T00:{:02d}:00Z".format
    return [_event(pipeline, {"state": "STARTED"}, t(0)),
            _event(stage, {"stage": "Approval", "state": "STARTED"}, t(1)),
            _event(action, {"stage": "Approval", "action": "Approval", "state": "STARTED"}, t(1)),
            _event(action, {"stage": "Approval", "action": "Approval", "state": "FAILED",
                            "execution-result": {"external-execution-summary": "not now"}}, t(2)),
            _event(stage, {"stage": "Approval", "state": "FAILED"}, t(2)),
            _event(pipeline, {"state": "FAILED"}, t(3)),
            _event(pipeline, {"state": "RESUMED"}, t(5)),
            _event(stage, {"stage": "Approval", "state": "STARTED"}, t(6)),
            _event(action, {"stage": "Approval", "action": "Approval", "state": "STARTED"}, t(6)),
            _event(action, {"stage": "Approval", "action": "Approval", "state": "SUCCEEDED"}, t(7)),
            _event(stage, {"stage": "Approval", "state": "SUCCEEDED"}, t(7)),
            _event(stage, {"stage": "Deploy", "state": "STARTED"}, t(8)),
            _event(stage, {"stage": "Deploy", "state": "SUCCEEDED"}, t(9)),
            _event(pipeline, {"state": "SUCCEEDED"}, t(10))]


@pytest.fixture(scope="module")
def executions(background_loop: BackgroundLoop, moto) -> dict[str, list[PipelineEvent]]:  # type: ignore[no-untyped-def]
    suffix = uuid.uuid4().hex[:8]  # one queue for the module's recordings
    queue, _ = create_events_queue(AwsClients(), f"lifecycle-{suffix}", f"lifecycle-dlq-{suffix}")
    return {"approved": record_prod_execution(background_loop, queue),
            "rejected": record_prod_execution(background_loop, queue, approve=False),
            "deploy_failed": record_prod_execution(background_loop, queue, fail_deploy=True),
            "rejected_then_retried": rejected_then_retried()}


def test_the_table_names_only_known_phases_and_every_phase_can_be_reached():
    for t in TRANSITIONS:
        assert t.source <= set(PHASES) and t.dest in PHASES, t
    reached = {"starting"} | {t.dest for t in TRANSITIONS}
    assert reached == set(PHASES)
    assert set(PHASE_BUTTONS) <= set(PHASES)


def buttons_shown(card) -> set[str]:  # type: ignore[no-untyped-def]
    _, blocks = render_card(card)
    shown = {el["action_id"] for b in blocks if b["type"] == "actions" for el in b["elements"]}
    return shown & set(BUTTON_ACTIONS.values())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), run=st.sampled_from(sorted(RUNS)))
def test_any_order_of_events_and_clicks_moves_the_card_only_as_the_table_says(
        executions: dict[str, list[PipelineEvent]], data: st.DataObject, run: str):
    events = [e for e in executions[run] if e.kind != "scan"]  # scans reach a card through the image index
    final_phase, decision = RUNS[run]
    # every event at least once, some twice, in any order; clicks in between
    steps: list[object] = list(data.draw(st.permutations(events)))
    steps += data.draw(st.lists(st.sampled_from(events), max_size=8))
    # a click recorded means CodePipeline took it: only in runs whose events say what it decided
    outcomes = ["recorded", "released", "pod died"] if decision else ["released", "pod died"]
    clicks = data.draw(st.lists(st.tuples(st.sampled_from(["U0APPR1", "U0APPR2"]), st.sampled_from(outcomes),
                                          st.integers(0, 120)), max_size=6))
    for click in clicks:
        steps.insert(data.draw(st.integers(0, len(steps))), click)
    steps = data.draw(st.permutations(steps)) if data.draw(st.booleans()) else steps

    card = new_card(events[0].execution_id or "x")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    sent: list[str] = []
    asked_while_open = False
    for step in steps:
        before, attempt = card_phase(card), card.approval.attempt
        notes = []
        if isinstance(step, PipelineEvent):
            if step.kind == "action" and step.stage == "Approval" and step.state == "STARTED" and \
                    card.approval.requested_at is None:
                # its stage or the pipeline ended first: nobody is asked for what is already decided
                asked_while_open = not card.finished and card.approval.decision is None and \
                    card.stage("Approval").state not in ("SUCCEEDED", "FAILED")
            notes = apply_event(card, step, approvers="<!subteam^S0APPR>")
        else:
            user, outcome, seconds = step  # type: ignore[misc]
            now += timedelta(seconds=seconds)
            won = claim(card, user, decision or "Approved", now, LEASE)
            assert not won or before in ("awaiting_approval", "deciding"), (before, step)
            if won and outcome == "recorded" and decision:  # CodePipeline took it: its event follows in `steps`
                record_decision(card, user, decision, None, now)
            elif won and outcome == "released":
                release_claim(card, user)
            # "pod died": the claim stays until its lease runs out
        after = card_phase(card)
        assert allowed(before, after), f"{before} -> {after} on {step}"
        assert buttons_shown(card) == {BUTTON_ACTIONS[b] for b in PHASE_BUTTONS.get(after, ())}, after
        if before in FINAL and after not in FINAL:  # a finished card runs again only when retried
            assert isinstance(step, PipelineEvent) and (step.state == "RESUMED" or card.approval.attempt > attempt), \
                (before, after, step)
        for note in notes:
            assert note.key not in sent, f"note {note.key!r} sent twice"
            sent.append(note.key)
            if note.key.split("#")[0] == "approval":  # the approvers are pinged only while it waits for them
                assert after == "awaiting_approval"

    assert card_phase(card) == final_phase
    if run == "rejected_then_retried":  # whatever came first, the card ends with the retry's approval
        assert card.approval.decision == "Approved" and "Rejected" not in json.dumps(render_card(card)[1])
        return
    assert ("approval" in sent) == asked_while_open
    failures = [k for k in sent if k.startswith("failed:")]
    assert failures == (["failed:Deploy"] if run == "deploy_failed" else [])
