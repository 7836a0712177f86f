"""The deploy card: one Slack message per pipeline execution, edited in place.

`DeployCard` is the card's state (stored in DynamoDB); `apply_event` moves it
forward from a pipeline event, idempotently and safely out of order (a late
STARTED never overwrites SUCCEEDED). The card's phases, the transitions events and
clicks may make, and the buttons each phase shows are in `card_lifecycle`; the Slack adapter
(`bot/slack/deploy_card_blocks.py`) renders the card as Block Kit. Details that matter go to the card's
thread as `ThreadNote`s, each posted once.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from bot.delivery.escaping import escape_text
from bot.delivery.freeze_calendar import in_words
from bot.delivery.pipeline_events import PipelineEvent
from bot.delivery.scan_report import scan_failed

STAGES = ("Source", "Build", "Approval", "Deploy", "Promote")  # Promote runs instead of Build and Deploy
TERMINAL_STATUS = ("Succeeded", "Failed", "Stopped", "Superseded")
PIPELINE_STATUS = {"STARTED": "InProgress", "RESUMED": "InProgress", "STOPPING": "Stopping",
                   "SUCCEEDED": "Succeeded", "FAILED": "Failed", "STOPPED": "Stopped", "CANCELED": "Stopped",
                   "SUPERSEDED": "Superseded"}
STAGE_RANK = {"PENDING": 0, "STARTED": 1, "RESUMED": 1, "IN_PROGRESS": 1, "STOPPING": 1,
              "SUCCEEDED": 2, "FAILED": 2, "STOPPED": 2, "CANCELED": 2, "ABANDONED": 2, "SKIPPED": 2}
BUILD_PROJECT_STAGE = {"build": "Build", "deploy": "Deploy", "promote": "Promote"}  # DEPLOY_PHASE -> stage
APPROVAL_LIFETIME = timedelta(days=7)  # CodePipeline's manual approval timeout
EXPIRY_SKEW = timedelta(minutes=1)  # event times have whole seconds, and AWS's clocks differ a little
DECIDED = ("Approved", "Rejected", "Expired")
PHASE_FAILED = ("FAILED", "FAULT", "TIMED_OUT")  # CodeBuild's phase statuses that end a build
REGION = "ap-northeast-2"
MAX_PROGRESS_NOTES = 60  # a build posts about ten: more is a loop or a flood, and the card must stay small


@dataclass
class StageRow:
    state: str = "PENDING"
    started: str | None = None
    ended: str | None = None
    at: str | None = None  # time of the event that set `state`


@dataclass
class Approval:
    requested_at: str | None = None
    expires_at: str | None = None
    token: str | None = None
    decision: str | None = None  # Approving, Approved, Rejecting, Rejected, Expired
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None
    claimed_until: str | None = None  # while Approving/Rejecting: the claim's lease; expired, it is open again
    attempt: int = 1  # "Retry failed stage" on a refused approval asks again: its notes are the attempt's own

    def note_key(self, name: str) -> str:
        return name if self.attempt == 1 else f"{name}#{self.attempt}"

    def claim_expired(self, now: datetime) -> bool:
        return self.decision in ("Approving", "Rejecting") and \
            (not self.claimed_until or datetime.fromisoformat(self.claimed_until) <= now)


@dataclass
class ScanLine:
    repository: str
    counts: dict[str, int]
    at: str
    status: str = "COMPLETE"  # the event's scan-status

    @property
    def failed(self) -> bool:
        return scan_failed(self.status)

    @property
    def blocking(self) -> bool:
        return self.failed or self.counts.get("CRITICAL", 0) > 0  # a scan that could not run fails closed


@dataclass
class ThreadNote:
    key: str  # posted once per card
    text: str


@dataclass
class DeployCard:
    execution_id: str
    pipeline: str
    environment: str
    service: str  # a service name, "all", or "changed"
    channel: str
    requested_by: str | None = None
    trigger: str = "slack"  # slack | push
    ts: str | None = None
    status: str = "Starting"
    status_at: str | None = None
    started: str | None = None
    ended: str | None = None
    commit: str | None = None
    stages: dict[str, StageRow] = field(default_factory=dict)
    approval: Approval = field(default_factory=Approval)
    scans: dict[str, ScanLine] = field(default_factory=dict)
    failure: dict[str, str] | None = None
    links: dict[str, str] = field(default_factory=dict)
    needs_approval: bool = False
    notes: list[str] = field(default_factory=list)
    superseded_by: str | None = None  # a newer execution of the service waits for approval (approval_reminders)
    origin_note: str | None = None  # a promotion: from where, which execution, digest and scan (handlers/promote)
    gate_note: str | None = None  # what it went through: its requester's own lock, a broken freeze (deploy_gate)
    # a lock taken while it waits that its Deploy stage would refuse it under (handlers/locks.py); None once gone
    lock_note: str | None = None
    posting_since: str | None = None  # a replica is posting the message (a push's card); see ensure_card
    # thread notes recorded but not yet posted, [key, text] in order: an outbox, cleared note by note only
    # after Slack took each one, so a failed post is retried, never lost
    outbox: list[list[str]] = field(default_factory=list)

    # --- storage ----------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeployCard:
        data = json.loads(text)
        data["stages"] = {k: StageRow(**v) for k, v in data.get("stages", {}).items()}
        data["approval"] = Approval(**data.get("approval", {}))
        data["scans"] = {k: ScanLine(**v) for k, v in data.get("scans", {}).items()}
        return cls(**data)

    # --- questions the handlers ask ---------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUS

    @property
    def awaiting_approval(self) -> bool:
        return (not self.finished and self.approval.requested_at is not None
                and self.approval.decision in (None, "Approving", "Rejecting")
                and self.stage("Approval").state not in ("SUCCEEDED", "FAILED"))

    def stage(self, name: str) -> StageRow:
        return self.stages.setdefault(name, StageRow())

    def note(self, key: str, text: str) -> list[ThreadNote]:
        if key in self.notes:
            return []
        self.notes.append(key)
        return [ThreadNote(key, text)]

    @property
    def service_label(self) -> str:
        return {"all": "all services", "changed": "changed services"}.get(self.service, self.service)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _advance(row: StageRow, state: str, at: datetime) -> bool:
    """Move a stage forward; a late or duplicate event never moves it back.

    The start is the earliest time any event showed the stage running, whatever
    order they came in; a retried stage's later terminal state replaces an earlier one.
    """
    when = _iso(at)
    new_rank, cur_rank = STAGE_RANK.get(state, 1), STAGE_RANK.get(row.state, 0)
    changed = False
    if new_rank >= 1 and (row.started is None or when < row.started):
        row.started, changed = when, True
    if new_rank > cur_rank or (new_rank == cur_rank == 2 and when > (row.at or "")):
        row.state, row.at = state, when
        if new_rank == 2:
            row.ended = when
        changed = True
    elif new_rank == 1 and row.state == "FAILED" and when > (row.at or ""):  # retried after it failed
        row.state, row.at, row.ended, changed = state, when, None, True
    return changed


def apply_event(card: DeployCard, event: PipelineEvent, approvers: str = "") -> list[ThreadNote]:
    """Apply one event to the card; returns the thread notes to post (each only once)."""
    when = _iso(event.time)
    notes: list[ThreadNote] = []
    if event.kind != "pipeline" and card.status == "Starting":
        card.status = "InProgress"  # a stage, action, build or scan event: the execution runs, whatever came first
    if event.kind == "pipeline":
        status = PIPELINE_STATUS.get(event.state)
        if status in TERMINAL_STATUS and card.approval.attempt > 1 and when < (card.approval.requested_at or ""):
            pass  # the end of the attempt before "Retry failed stage", read after the retry's approval request
        elif status in TERMINAL_STATUS:
            if not card.finished or (card.status_at or "") < when:
                card.status, card.status_at, card.ended = status, when, when
                if status in ("Stopped", "Superseded"):  # what was running stops with the pipeline
                    for row in card.stages.values():
                        if STAGE_RANK.get(row.state, 0) == 1:
                            row.state, row.ended, row.at = "STOPPED", when, when
        elif event.state == "RESUMED" and card.status == "Failed" and (card.status_at or "") < when:
            # "Retry failed stage" (RetryStageExecution): the execution runs again (AWS's event reference:
            # RESUMED, "a failed pipeline execution has been retried"); a second failure is noted afresh
            card.status, card.status_at, card.ended, card.failure = "InProgress", when, None, None
            card.notes = [k for k in card.notes if not k.startswith(("failed:", "context:"))]
            notes += card.note(f"resumed:{when}", ":repeat: The failed stage is being retried.")
            notes += _ask_approvers(card, approvers)  # the retried approval's STARTED may have come first
        elif status is not None and not card.finished:
            card.status = status
            card.status_at = card.status_at if (card.status_at or "") > when else when
        if event.state == "STARTED" and (card.started is None or when < card.started):
            card.started = when
    elif event.kind == "stage" and event.stage:
        _advance(card.stage(event.stage), event.state, event.time)
    elif event.kind == "action" and event.stage:
        notes += _apply_action(card, event, approvers)
    elif event.kind in ("build", "build_phase"):
        phase = event.environment_variables.get("DEPLOY_PHASE", "build")
        stage = BUILD_PROJECT_STAGE.get(phase, "Build")
        logs = event.detail.get("additional-information", {}).get("logs", {})
        if isinstance(logs, dict) and logs.get("deep-link"):
            card.links.setdefault(f"{stage.lower()}_log", str(logs["deep-link"]))
        if event.kind == "build_phase" and event.state in PHASE_FAILED:
            card.failure = card.failure or {}
            card.failure.setdefault("phase", str(event.detail.get("completed-phase", "")))
            # what failed is only here: the action's own event says "Build terminated with state: FAILED"
            context = command_failure(str(event.detail.get("completed-phase-context", "")).strip("[]: "))
            if context:
                card.failure.setdefault("context", context)
                pending = next((n for n in card.outbox if n[0] == f"failed:{stage}" and not (len(n) > 2 and n[2])),
                               None)
                if pending is not None:  # the failure note is not posted yet: it says what failed, in one note
                    card.notes.append(f"context:{stage}")
                    pending[1] = _failure_note(card, stage, card.failure.get("action", stage), context,
                                               card.failure.get("url"))
                elif f"failed:{stage}" in card.notes:  # the failure note went out before this arrived
                    log = card.links.get(f"{stage.lower()}_log")
                    notes += card.note(f"context:{stage}", f":mag: *{stage} failed in {card.failure['phase']}*:"
                                                           f"\n>{escape_text(context[:1500])}"
                                                           + (f"\n<{log}|Build log in CloudWatch Logs>"
                                                              if is_aws_console_link(log) else ""))
    elif event.kind == "progress":  # the buildspec's line: text as CI wrote it, never markup, and bounded
        if sum(k.startswith("progress:") for k in card.notes) < MAX_PROGRESS_NOTES:
            text = escape_text(str(event.detail.get("text", "")))
            notes += card.note(f"progress:{event.event_id}", text if len(text) <= 3000 else text[:2997] + "...")
    elif event.kind == "scan":
        repo = str(event.detail.get("repository-name"))
        counts = {str(k).upper(): int(v) for k, v in (event.detail.get("finding-severity-counts") or {}).items()
                  if str(k).upper() != "TOTAL"}  # Inspector adds a total; the severities are what count
        line = ScanLine(repository=repo, counts=counts, at=when, status=event.state or "UNKNOWN")  # none: closed
        card.scans[repo] = line
        tag = next(iter(event.detail.get("image-tags") or []), None) or card.commit or ""
        if line.failed:
            text = f":no_entry: *Scan failed* for `{repo}:{tag[:7]}` (`{line.status}`): the gate fails closed"
        else:
            verdict = ":no_entry: *blocks the deploy* (CRITICAL findings)" if counts.get("CRITICAL") else \
                ":white_check_mark: passes the gate (no CRITICAL findings)"
            text = f":shield: Scan of `{repo}:{tag[:7]}`: {severity_line(counts)}. {verdict}"
        notes += card.note(f"scan:{repo}", text)
    return notes


def _apply_action(card: DeployCard, event: PipelineEvent, approvers: str) -> list[ThreadNote]:
    assert event.stage is not None
    notes: list[ThreadNote] = []
    row = card.stage(event.stage)
    if STAGE_RANK.get(row.state, 0) == 0:
        _advance(row, "STARTED", event.time)  # an action running means its stage runs, whatever arrived first
    result = event.detail.get("execution-result") or {}
    summary = str(result.get("external-execution-summary") or "")
    url = result.get("external-execution-url")
    when = _iso(event.time)
    if event.stage == "Source" and event.state == "SUCCEEDED" and result.get("external-execution-id"):
        card.commit = str(result["external-execution-id"])
    if url and event.stage in ("Build", "Deploy", "Promote"):
        card.links.setdefault(event.stage.lower(), str(url))
    if event.stage == "Approval":
        card.needs_approval = True
        a = card.approval
        if event.state in ("STARTED", "SUCCEEDED", "FAILED") and a.decision in ("Rejected", "Expired") \
                and a.decided_at and when > a.decided_at:  # "Retry failed stage" on a refused approval: a new request
            card.approval = a = Approval(attempt=a.attempt + 1)
        if event.state == "STARTED" and a.requested_at is None:
            a.requested_at = when
            a.expires_at = _iso(event.time + APPROVAL_LIFETIME)
            notes += _ask_approvers(card, approvers)
            notes += _expiry(card)  # the FAILED came first: now its time can be judged
        elif event.state in ("SUCCEEDED", "FAILED") and a.requested_at and when < a.requested_at \
                and a.decision not in ("Rejected", "Expired"):
            pass  # the end of an earlier attempt, delivered late: this attempt's own end decides
        elif event.state in ("SUCCEEDED", "FAILED") and card.approval.decision not in DECIDED:
            outcome = "Approved" if event.state == "SUCCEEDED" else "Rejected"
            claimed = {"Approving": "Approved", "Rejecting": "Rejected"}.get(card.approval.decision or "")
            if claimed != outcome:  # not what the claimant asked for: the console's doing, or the clock's
                card.approval.decided_by = None
            card.approval.decision, card.approval.claimed_until = outcome, None
            drop_reminders(card)
            card.approval.decided_at = card.approval.decided_at or when
            card.approval.reason = card.approval.reason or (summary if event.state == "FAILED" else None)
            notes += _expiry(card)
    if event.state == "FAILED" and not (event.stage == "Approval"):
        card.failure = {**(card.failure or {}), "stage": event.stage, "action": event.action or event.stage,
                        "summary": summary or str(result.get("error-code") or "failed")}
        if url:
            card.failure["url"] = str(url)
        context = (card.failure or {}).get("context")
        if context:  # the phase change came first: its context says what failed, once
            card.notes.append(f"context:{event.stage}")
        notes += card.note(f"failed:{event.stage}", _failure_note(card, event.stage, event.action or event.stage,
                                                                  context or summary, url))
    return notes


def _ask_approvers(card: DeployCard, approvers: str) -> list[ThreadNote]:
    """Ping the approvers once per request, and only while it really waits for them (a late STARTED, after
    the stage or the pipeline ended, pings nobody)."""
    if not card.awaiting_approval:
        return []
    return card.note(card.approval.note_key("approval"), f":lock: Approval needed for this {card.environment} deploy"
                                 f"{': ' + approvers if approvers else ''}. Use the buttons on the card.")


AWS_CONSOLE_LINK = re.compile(r"^https://([a-z0-9-]+\.)*console\.aws\.amazon\.com/[^\s<>|]*$")


def is_aws_console_link(url: object) -> bool:
    """A link the card may show: AWS's console, nothing that could close Slack's <url|label> early."""
    return isinstance(url, str) and bool(AWS_CONSOLE_LINK.match(url))


def _failure_note(card: DeployCard, stage: str, action: str, reason: str | None, url: object) -> str:
    # what failed is the repository's text (the buildspec's commands, CodeBuild quotes them): text, not markup
    log = card.links.get(f"{stage.lower()}_log")
    detail = f"\n>{escape_text(reason[:1500])}" if reason else ""
    return (f":x: *{stage} failed* ({escape_text(action)}).{detail}"
            + (f"\n<{log}|Build log in CloudWatch Logs>" if is_aws_console_link(log) else "")
            + (f"  ·  <{url}|CodeBuild run>" if is_aws_console_link(url) else ""))


def _expiry(card: DeployCard) -> list[ThreadNote]:
    """A rejection nobody made: the approval failed when its seven days ran out (AWS's user guide: with no
    response within seven days the pipeline fails). Judged by time, which the events carry, not by a summary."""
    a = card.approval
    if a.decision != "Rejected" or a.decided_by or not a.decided_at:
        return []
    if not a.requested_at or datetime.fromisoformat(a.decided_at) < \
            datetime.fromisoformat(a.requested_at) + APPROVAL_LIFETIME - EXPIRY_SKEW:
        return []  # without the approval's own start nothing is judged: its STARTED will judge when it comes
    a.decision = "Expired"
    service = card.service if card.service not in ("changed",) else ""
    again = f"`/erp deploy {service + ' ' if service else ''}{card.environment}`"
    text = (f":hourglass: This {card.environment} deploy's approval expired: nobody approved or rejected it"
            f" within {APPROVAL_LIFETIME.days} days, so nothing was deployed. To try again: {again}")
    return card.note(a.note_key("approval-expired"), text)


# --- phases, and the text both the card and the thread use ---------------------------

COMMAND_ERROR = re.compile(r"^(?P<kind>[A-Z_]+): Error while executing command: (?P<command>.*)\. "
                           r"Reason: (?P<reason>.*)$", re.S)
CONTROL = re.compile(r"^(#|(set|if|then|else|elif|fi|for|do|done|while|case|esac)\b)")


def command_failure(context: str) -> str:
    """CodeBuild quotes the failed command as the buildspec wrote it, and ours are multi-line blocks: keep its
    first real command (not `set -e`, `if`, `for`, comments) and say how much was left out."""
    m = COMMAND_ERROR.match(context)
    if not m or "\n" not in m.group("command").strip():
        return context
    lines = [line.strip() for line in m.group("command").splitlines() if line.strip()]
    commands = [line for line in lines if not CONTROL.match(line)]
    first = (commands or lines)[0][:160]
    return (f"{m.group('kind')}: Error while executing command: `{first}` (and {len(lines) - 1} more lines of"
            f" the block). Reason: {m.group('reason').strip()}")


def failure_reason(failure: dict[str, str]) -> str:
    """What failed, as people need it: CodeBuild's phase context ("COMMAND_EXECUTION_ERROR: Error while
    executing command: ... Reason: exit status 1") over the action's generic summary."""
    return failure.get("context") or failure.get("summary") or ""


def severity_line(counts: dict[str, int]) -> str:
    order = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
    shown = [f"{counts.get(s, 0)} {s.lower()}" for s in order[:4]]
    return " · ".join(shown)


def duration_text(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    seconds = int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m {seconds % 60:02d}s"


def approval_reminders(card: DeployCard, now: datetime, every: timedelta, approvers: str,
                       escalate_after: timedelta | None = None, escalation: str = "") -> list[ThreadNote]:
    """While nobody has decided: one note per `every` waited, never more (the latest interval's, whatever
    sweeps were missed); from `escalate_after` on, the note mentions the escalation group too. Nothing once
    anyone decides, in Slack (a claim counts) or in the console."""
    a = card.approval
    if not card.awaiting_approval or not a.requested_at or every <= timedelta(0):
        return []
    if a.decision is not None and not a.claim_expired(now):  # a claim that ran out (its pod died) waits again
        return []
    if a.expires_at and now >= datetime.fromisoformat(a.expires_at):  # expired, even if its event was lost
        return []
    waited = now - datetime.fromisoformat(a.requested_at)
    intervals = int(waited / every)
    if intervals < 1:
        return []
    expires = f" It expires {slack_date(a.expires_at)}." if a.expires_at else ""
    if escalate_after is not None and escalation and waited >= escalate_after:
        text = (f":rotating_light: This {card.environment} deploy has waited {in_words(waited)} for approval:"
                f" {escalation}, can you decide, or find who can? ({approvers} were asked.){expires}")
    else:
        text = f":alarm_clock: Still waiting for approval after {in_words(waited)}: {approvers}.{expires}"
    return card.note(a.note_key(f"reminder-{intervals}"), text)


def drop_reminders(card: DeployCard) -> None:
    """Someone decided: reminders still waiting in the outbox would land after the decision; they go."""
    card.outbox = [entry for entry in card.outbox if not entry[0].split("#")[0].startswith("reminder-")]


def started_first(a: DeployCard, b: DeployCard) -> bool:
    """Whether `a`'s execution started before `b`'s. Events of one batch are handled at once, so a card may not
    know its start yet (seen in CI: the newer one was taken for the older): then by when each reached the
    approval."""
    if a.started and b.started:
        return a.started <= b.started
    return (a.approval.requested_at or "") <= (b.approval.requested_at or "")


def superseded(card: DeployCard, newer: str, where: str) -> list[ThreadNote]:
    """A newer execution of the same service reached the approval: this one is out of date."""
    if not card.awaiting_approval or card.approval.decision in DECIDED:
        return []
    card.superseded_by = newer
    return card.note(card.approval.note_key("superseded"), f":arrow_heading_down: Superseded: a newer deploy of"
                                                           f" {card.service_label} (execution `{newer[:8]}`) is"
                                                           f" waiting for approval: {where}.")


def slack_date(iso: str) -> str:
    """An ISO time as Slack shows it to each reader, in their own zone."""
    epoch = int(datetime.fromisoformat(iso).timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} at {{time}}|{iso[:16]} UTC>"
