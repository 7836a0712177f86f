"""The deploy card as Block Kit: `render_card` for chat.postMessage / chat.update.

The card's state and phases are the delivery logic's (`bot/delivery/deploy_card.py`);
this module only decides how they look in Slack, and the ids of the card's buttons.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.delivery.card_lifecycle import PHASE_BUTTONS, card_phase
from bot.delivery.deploy_card import (
    APPROVAL_LIFETIME,
    STAGE_RANK,
    STAGES,
    DeployCard,
    StageRow,
    duration_text,
    failure_reason,
    is_aws_console_link,
    slack_date,
)
from bot.delivery.escaping import escape_text

REGION = "ap-northeast-2"  # the console links' region
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")

APPROVE_ACTION = "deploy_approve"
REJECT_ACTION = "deploy_reject"
CARD_EVENT_TYPE = "erp_deploy_card"  # message metadata on every card message, naming its execution
ROLLBACK_ACTION = "deploy_rollback"
REJECT_VIEW = "deploy_reject_reason"

def _slack_time(iso: str, fmt: str = "{time}") -> str:
    epoch = int(datetime.fromisoformat(iso).timestamp())
    fallback = datetime.fromisoformat(iso).strftime("%H:%M UTC")
    return f"<!date^{epoch}^{fmt}|{fallback}>"


STAGE_ICON = {"PENDING": ":white_circle:", "STARTED": ":hourglass_flowing_sand:", "RESUMED": ":hourglass_flowing_sand:",
              "IN_PROGRESS": ":hourglass_flowing_sand:", "SUCCEEDED": ":white_check_mark:", "FAILED": ":x:",
              "STOPPED": ":black_circle:", "CANCELED": ":black_circle:", "ABANDONED": ":black_circle:",
              "STOPPING": ":black_circle:", "SKIPPED": ":next_track_button:"}


def _status_line(card: DeployCard) -> str:
    total = duration_text(card.started, card.ended)
    if card.status == "Succeeded":
        return f":large_green_circle: *Succeeded*{f' in {total}' if total else ''}"
    if card.approval.decision == "Expired":  # the pipeline's FAILED follows, if it has not come yet
        return f":hourglass: *Expired*: nobody approved within {APPROVAL_LIFETIME.days} days"
    if card.approval.decision == "Rejected":
        return f":red_circle: *Rejected*{f' by <@{card.approval.decided_by}>' if card.approval.decided_by else ''}"
    if card.status == "Failed":
        f = card.failure or {}
        where = f" at {f['stage']}" if f.get("stage") else ""
        reason = escape_text(failure_reason(f)[:300])  # CodeBuild quotes commands, which may hold < and >
        return f":red_circle: *Failed*{where}" + (f": {reason}" if reason else "")
    if card.status in ("Stopped", "Superseded"):
        return f":black_circle: *{card.status}*"
    phase = card_phase(card)
    if phase == "awaiting_approval":
        expires = f", expires {_slack_time(card.approval.expires_at, '{date_short_pretty} {time}')}" \
            if card.approval.expires_at else ""
        return f":lock: *Waiting for approval*{expires}"
    if phase == "deciding":
        who = f"<@{card.approval.decided_by}>'s" if card.approval.decided_by else "the"
        return f":hourglass_flowing_sand: *Recording {who} decision...*"
    if card.status == "Starting":
        return ":hourglass_flowing_sand: *Starting the pipeline...*"
    running = [name for name in STAGES if STAGE_RANK.get(card.stage(name).state, 0) == 1]
    return f":hourglass_flowing_sand: *{running[-1] if running else 'In progress'}...*"


def render_card(card: DeployCard) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for chat.postMessage / chat.update."""
    title = f"Deploy {card.service_label} to {card.environment}"
    asked = f"<@{card.requested_by}>" if card.requested_by else "a push to main"
    fields = [MarkdownTextObject(text=f"*Requested by*\n{asked}"),
              MarkdownTextObject(text=f"*Image*\n`{card.commit[:7]}`" if card.commit else "*Image*\npending build")]
    if card.needs_approval or card.approval.requested_at:
        a = card.approval
        if a.decision == "Expired":
            fields.append(MarkdownTextObject(text=f"*Approval*\nexpired after {APPROVAL_LIFETIME.days} days"))
        elif a.decision in ("Approved", "Rejected"):
            who = (f"<@{a.decided_by}>" if SLACK_USER.match(a.decided_by) else escape_text(a.decided_by)) \
                if a.decided_by else "the console"  # the bot itself rejects a superseded approval
            at = f" at {_slack_time(a.decided_at)}" if a.decided_at else ""
            fields.append(MarkdownTextObject(text=f"*{a.decision} by*\n{who}{at}"))
        else:
            if a.requested_at:  # how long it has waited and when it expires, each in the reader's own zone
                waiting = f"waiting since {slack_date(a.requested_at)}" + \
                    (f"\nexpires {slack_date(a.expires_at)}" if a.expires_at else "") + \
                    (f"\nsuperseded by `{card.superseded_by[:8]}`" if card.superseded_by else "")
                fields.append(MarkdownTextObject(text=f"*Approval*\n{waiting}"))
            else:
                fields.append(MarkdownTextObject(text="*Approval*\nnot yet"))
    if card.scans:
        worst = {k: sum(s.counts.get(k, 0) for s in card.scans.values()) for k in ("CRITICAL", "HIGH")}
        failed = [s for s in card.scans.values() if s.failed]
        icon = ":no_entry:" if worst["CRITICAL"] or failed else ":shield:"
        summary = f"{len(failed)} scan failed" if failed else f"{worst['CRITICAL']} critical · {worst['HIGH']} high"
        fields.append(MarkdownTextObject(text=f"*Scan* ({len(card.scans)} image{'s' if len(card.scans) > 1 else ''})\n"
                                              f"{icon} {summary}"))
    skipped = {name for name, row in card.stages.items() if row.state == "SKIPPED"}
    promotion = card.origin_note is not None or (card.stages.get("Promote") or StageRow()).state not in \
        ("PENDING", "SKIPPED")
    # a promotion runs Promote instead of Build and Deploy; any other deploy never shows Promote
    hidden = {"Build", "Deploy"} if promotion else {"Promote"}
    stage_names = [s for s in STAGES if s not in hidden and
                   (s != "Approval" or card.needs_approval or card.environment == "prod" or s in skipped)]
    chips = []
    for name in stage_names:
        row = card.stage(name)
        took = "skipped" if name in skipped else duration_text(row.started, row.ended)
        state = row.state
        if card.status == "Succeeded" and STAGE_RANK.get(state, 0) == 1:
            # a succeeded execution finished every stage it started; the stage's own event (EventBridge does
            # not order them) may still be on its way, with the stage's time
            state = "SUCCEEDED"
        chips.append(f"{STAGE_ICON.get(state, ':white_circle:')} {name}{f' {took}' if took else ''}")
    blocks: list[Any] = [
        HeaderBlock(text=f":rocket: {title}"[:150]),
        SectionBlock(text=MarkdownTextObject(text=_status_line(card)), fields=fields),
        ContextBlock(elements=[MarkdownTextObject(text="   ".join(chips))]),
    ]
    if card.origin_note:  # written by the bot from its records, ECR and the scan
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=card.origin_note[:600])]))
    if card.gate_note:  # written by the bot from the lock and the approver's reason, escaped there
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=card.gate_note[:600])]))
    if card.lock_note and card.awaiting_approval:  # by the bot from the lock, its reason escaped there
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=card.lock_note[:600])]))
    if card.approval.decision == "Rejected" and card.approval.reason:
        reason = escape_text(card.approval.reason[:500])  # as the approver typed it, never live markup
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*Reason:* {reason}")))
    buttons = []
    for name in PHASE_BUTTONS.get(card_phase(card), ()):
        if name == "approve":
            buttons.append(ButtonElement(
                text="Approve", action_id=APPROVE_ACTION, value=card.execution_id, style="primary",
                confirm=ConfirmObject(title="Approve this deploy?", text=f"{title}, image "
                                      f"`{(card.commit or 'unknown')[:7]}`. It starts right away.",
                                      confirm="Approve", deny="Cancel")))
        elif name == "reject":
            buttons.append(ButtonElement(text="Reject", action_id=REJECT_ACTION, value=card.execution_id,
                                         style="danger"))
        elif name == "rollback" and card.environment:
            # what this execution changed is read from helm's history when clicked, never from this value
            buttons.append(ButtonElement(text="Roll back", action_id=ROLLBACK_ACTION,
                                         value=f"{card.service} {card.environment} {card.execution_id}",
                                         style="danger"))
    pipeline_url = (f"https://{REGION}.console.aws.amazon.com/codesuite/codepipeline/pipelines/{card.pipeline}/"
                    f"executions/{card.execution_id}/timeline?region={REGION}")
    buttons.append(ButtonElement(text="Pipeline", action_id="open_pipeline", url=pipeline_url))
    log = card.links.get("deploy_log") or card.links.get("promote_log") or card.links.get("build_log")
    if is_aws_console_link(log):  # events say where the log is: only AWS's console gets a button
        buttons.append(ButtonElement(text="Logs", action_id="open_logs", url=log))
    blocks.append(ActionsBlock(elements=buttons))
    started = f" · started {_slack_time(card.started)}" if card.started else ""
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"execution `{card.execution_id[:8]}`{started}")]))
    text = f"{title}: {card.status if card.finished else _status_line(card).split('*')[1]}"
    return text, [b.to_dict() for b in blocks]


def blocks_hash(blocks: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()[:16]
