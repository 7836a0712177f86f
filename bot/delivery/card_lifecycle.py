"""The deploy card's life: its phases, what moves it from one to another, and the buttons each shows.

A reader can check the tables below against the code: `tests/delivery/test_card_lifecycle.py` drives
the card with every order and duplication of a real execution's events and of approval clicks, and
fails on any phase change the table does not list. Events are applied by `deploy_card.apply_event`
(idempotent, safe out of order); clicks by the functions at the end of this module, which the
approval handler runs inside a conditional write.

Events arrive in any order, so a card may jump (a pipeline's SUCCEEDED read before its stages), and a
final phase may be refined by a late event that says more about it (a FAILED pipeline whose failed
Deploy action arrives after it becomes `deploy_failed`; a rejection whose approval turns out to have
started seven days earlier becomes `expired`). Notifying people is kept apart: the functions return
`ThreadNote`s, and the card store's outbox posts each once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.delivery.deploy_card import DeployCard, drop_reminders

# phase -> (when, buttons)
PHASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "starting": ("the card exists, the pipeline has not reported", ()),
    "running": ("a stage runs", ()),
    "awaiting_approval": ("the Approval action started and nobody decided", ("approve", "reject")),
    # a claim is a lease: if the claimant's pod died, it runs out and the next click takes over
    "deciding": ("an approver's decision is being recorded (claimed)", ("approve", "reject")),
    "succeeded": ("the pipeline succeeded", ()),
    "failed": ("Source or Build (the scan gate) failed: nothing reached the cluster", ()),
    # the click reads Helm's history: offered only if the automatic rollback did not restore what ran before
    "deploy_failed": ("the Deploy stage failed: this execution changed the cluster", ("rollback",)),
    "rejected": ("an approver, or the console, rejected it", ()),
    "expired": ("nobody decided within the approval's 7 days", ()),
    "stopped": ("stopped from the console", ()),
    "superseded": ("a newer execution took its place", ()),
}
ACTIVE = frozenset({"starting", "running", "awaiting_approval", "deciding"})
FINAL = frozenset(PHASES) - ACTIVE
PHASE_BUTTONS = {phase: buttons for phase, (_, buttons) in PHASES.items() if buttons}


@dataclass(frozen=True)
class Transition:
    trigger: str
    source: frozenset[str]
    dest: str


def _t(trigger: str, source: set[str] | frozenset[str], dest: str) -> Transition:
    return Transition(trigger, frozenset(source), dest)


TRANSITIONS: tuple[Transition, ...] = (
    _t("any pipeline, stage or action event", {"starting"}, "running"),
    _t("Approval action STARTED", {"starting", "running"}, "awaiting_approval"),
    _t("click Approve or Reject: claims the decision", {"awaiting_approval"}, "deciding"),
    _t("the claim is released (CodePipeline refused, Slack or DynamoDB failed)", {"deciding"},
       "awaiting_approval"),
    _t("Approval SUCCEEDED, or the decision recorded", {"starting", "awaiting_approval", "deciding"}, "running"),
    _t("pipeline SUCCEEDED", ACTIVE, "succeeded"),
    _t("pipeline FAILED before Deploy", ACTIVE, "failed"),
    _t("pipeline FAILED at Deploy (or its Deploy failure arrives late)", ACTIVE | {"failed"}, "deploy_failed"),
    # the pipeline's own FAILED follows (or came first); the card says rejected either way
    _t("Approval FAILED: rejected in Slack or the console", ACTIVE | {"failed"}, "rejected"),
    _t("Approval FAILED seven days after it started", ACTIVE | {"failed", "rejected"}, "expired"),
    _t("pipeline STOPPED or CANCELED", ACTIVE, "stopped"),
    _t("pipeline SUPERSEDED", ACTIVE, "superseded"),
    # "Retry failed stage" in the console: the execution runs again; a refused approval is asked again
    _t("pipeline RESUMED: Retry failed stage", {"failed", "deploy_failed", "rejected", "expired"}, "running"),
    _t("pipeline RESUMED, its retried Approval STARTED already read", {"failed", "deploy_failed", "rejected",
                                                                      "expired"}, "awaiting_approval"),
    # a retried execution's later events read before its RESUMED (events come in any order)
    *(_t("a retried execution's end, read before its RESUMED", {"failed", "deploy_failed", "rejected", "expired"},
         dest) for dest in ("succeeded", "failed", "deploy_failed", "stopped", "superseded")),
    _t("a retried execution's Deploy failure, read before its RESUMED", {"failed"}, "deploy_failed"),
    _t("a retried Approval STARTED, read before its RESUMED", {"rejected", "expired"}, "awaiting_approval"),
    _t("a retried stage's STARTED, read before its RESUMED", {"deploy_failed", "rejected", "expired"}, "failed"),
)


def allowed(source: str, dest: str) -> bool:
    return source == dest or any(source in t.source and t.dest == dest for t in TRANSITIONS)


def card_phase(card: DeployCard) -> str:
    """The card's phase, from its state (which events and clicks set)."""
    if card.status == "Succeeded":
        return "succeeded"  # whatever an earlier attempt's approval said
    if card.approval.decision in ("Rejected", "Expired"):
        return card.approval.decision.lower()  # the pipeline fails with it; nothing was deployed
    if card.finished:
        if card.status == "Failed" and ((card.failure or {}).get("stage") in ("Deploy", "Promote")
                                        or "FAILED" in (card.stage("Deploy").state, card.stage("Promote").state)):
            return "deploy_failed"
        return card.status.lower()
    if card.awaiting_approval:
        return "deciding" if card.approval.decision in ("Approving", "Rejecting") else "awaiting_approval"
    return "starting" if card.status == "Starting" else "running"


# --- clicks ------------------------------------------------------------------------------

def claim(card: DeployCard, user: str, status: str, now: datetime, lease: timedelta) -> bool:
    """An approver's click claims the decision, as a lease: True if this click won it."""
    a = card.approval
    if not card.awaiting_approval or not (a.decision is None or a.claim_expired(now)):
        return False
    a.decision = "Approving" if status == "Approved" else "Rejecting"
    a.decided_by, a.claimed_until = user, (now + lease).isoformat(timespec="seconds")
    drop_reminders(card)  # "still waiting" would land after the click
    return True


def release_claim(card: DeployCard, user: str) -> None:
    """The claimant could not record the decision: the buttons work again."""
    a = card.approval
    if a.decided_by == user and a.decision in ("Approving", "Rejecting"):
        a.decision, a.decided_by, a.claimed_until = None, None, None


def record_decision(card: DeployCard, user: str, status: str, reason: str | None, now: datetime) -> None:
    """CodePipeline took the decision (PutApprovalResult succeeded)."""
    a = card.approval
    a.decision, a.decided_by, a.decided_at = status, user, now.isoformat(timespec="seconds")
    a.reason, a.claimed_until = reason, None
