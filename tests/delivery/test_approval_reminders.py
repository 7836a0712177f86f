"""Approvals that do not rot: the reminder rule on a card, against fixed clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.delivery.deploy_card import DeployCard, approval_reminders, superseded

ASKED = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def waiting_card() -> DeployCard:
    card = DeployCard(execution_id="e-1", pipeline="erp-pipeline", environment="prod", service="employee",
                      channel="C0PROD", requested_by="U0DEV1", needs_approval=True, status="InProgress")
    card.approval.requested_at = ASKED.isoformat()
    card.approval.expires_at = (ASKED + timedelta(days=7)).isoformat()
    card.stage("Approval").state = "STARTED"
    return card


def remind(card: DeployCard, after: timedelta) -> list[str]:
    return [n.text for n in approval_reminders(card, ASKED + after, 2 * HOUR, "<@U0APPR1>", 6 * HOUR,
                                               "<!subteam^S0ONCALL>")]


def test_one_reminder_per_interval_then_one_escalation_and_nothing_once_decided():
    card = waiting_card()
    assert remind(card, 90 * timedelta(minutes=1)) == []
    [first] = remind(card, 2 * HOUR + timedelta(minutes=5))
    assert first.startswith(":alarm_clock: Still waiting for approval after 2h 5m: <@U0APPR1>.")
    assert "It expires <!date^" in first
    assert remind(card, 3 * HOUR) == []  # the same interval: never twice
    # a replica that missed intervals sends the latest one only
    [latest] = remind(card, 5 * HOUR)
    assert "after 5h" in latest
    [escalation] = remind(card, 6 * HOUR)  # the third interval, and escalate_after has passed
    assert escalation.startswith(":rotating_light:") and "<!subteam^S0ONCALL>" in escalation
    assert remind(card, 7 * HOUR) == []  # still one per interval
    [again] = remind(card, 8 * HOUR)
    assert "<!subteam^S0ONCALL>" in again and "8h" in again
    decided = waiting_card()
    decided.approval.decision = "Approving"  # someone pressed Approve: its claim counts
    decided.approval.claimed_until = (ASKED + 3 * HOUR + timedelta(minutes=1)).isoformat()
    assert remind(decided, 3 * HOUR) == []
    # a claim whose pod died runs out: the approval waits again, and so do its reminders (review finding)
    assert remind(decided, 4 * HOUR)
    # expired, even if the pipeline's FAILED event never came (review finding)
    assert remind(waiting_card(), timedelta(days=7, hours=1)) == []
    console = waiting_card()
    console.stage("Approval").state = "SUCCEEDED"  # decided in the console
    assert remind(console, 3 * HOUR) == []


def test_a_retried_approval_has_reminders_of_its_own():
    card = waiting_card()
    assert remind(card, 2 * HOUR)
    card.approval.attempt = 2  # "Retry failed stage" asked again: its own notes
    assert remind(card, 2 * HOUR)


def test_superseded_once_and_only_while_waiting():
    card = waiting_card()
    [note] = superseded(card, "e-2222222222", "<https://slack.example/p1|its card>")
    assert "execution `e-222222`" in note.text and card.superseded_by == "e-2222222222"
    assert superseded(card, "e-2222222222", "elsewhere") == []
    done = waiting_card()
    done.stage("Approval").state = "FAILED"
    assert superseded(done, "e-3", "x") == []


def test_a_decision_drops_the_reminders_not_yet_posted():
    """Review finding: a reminder queued in the outbox was posted after the approver's click."""
    from bot.delivery.card_lifecycle import claim

    card = waiting_card()
    [note] = approval_reminders(card, ASKED + 2 * HOUR, 2 * HOUR, "<@U0APPR1>")
    card.outbox.append([note.key, note.text])
    card.outbox.append(["scan:erp/employee-service", "a scan note stays"])
    assert claim(card, "U0APPR1", "Approved", ASKED + 2 * HOUR, timedelta(seconds=60))
    assert card.outbox == [["scan:erp/employee-service", "a scan note stays"]]


def test_which_started_first_when_a_card_does_not_know_its_start_yet():
    """CI found it: the newer execution's Approval STARTED was handled before its pipeline STARTED, so its card
    had no start, and the older execution was taken for the newer one."""
    from bot.delivery.deploy_card import started_first

    older, newer = waiting_card(), waiting_card()
    older.started = ASKED.isoformat()
    newer.approval.requested_at = (ASKED + HOUR).isoformat()  # its start not known yet
    assert started_first(older, newer) and not started_first(newer, older)
    newer.started = (ASKED + timedelta(minutes=30)).isoformat()
    assert started_first(older, newer)
