"""Approve / Reject on a prod deploy card.

Only a configured approver may decide, never the person who asked for the
deploy. The decision is claimed on the card with a conditional write before
CodePipeline is told, so of two approvers clicking at once one wins and the
other is told it was already decided. Reject asks for a reason in a modal.
Every decision, and every refusal, is an audit record.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import InputBlock, PlainTextInputElement, SectionBlock
from slack_sdk.models.views import View

from bot.aws.clients import BotoCoreError, ClientError, error_code
from bot.aws.codepipeline import APPROVAL_STAGE, approval_token, execution_facts
from bot.aws.state import AuditRecord
from bot.delivery.card_lifecycle import claim as claim_decision
from bot.delivery.card_lifecycle import record_decision, release_claim
from bot.delivery.deploy_card import DeployCard
from bot.runtime import Runtime
from bot.slack.deploy_card_blocks import APPROVE_ACTION, REJECT_ACTION, REJECT_VIEW

log = logging.getLogger(__name__)

MIN_REASON = 3
CLAIM_LEASE = timedelta(seconds=60)  # a claim older than this (its pod died) is open again
GONE_CODES = ("ApprovalAlreadyCompletedException", "InvalidApprovalTokenException")


async def _tell(runtime: Runtime, channel: str, user: str, text: str) -> None:
    try:
        await runtime.slack.chat_postEphemeral(channel=channel, user=user, text=text)
    except SlackApiError as e:
        log.warning("could not answer %s: %s", user, e.response.get("error"))


async def _audit(runtime: Runtime, card: DeployCard, user: str, action: str, outcome: str,
                 detail: str | None = None) -> None:
    await runtime.state.record_audit(AuditRecord(actor=user, action=action, environment=card.environment,
                                                 service=card.service, outcome=outcome, detail=detail,
                                                 execution_id=card.execution_id))


async def _decidable(runtime: Runtime, execution_id: str, user: str, verb: str) -> DeployCard | tuple[str, str]:
    """The card if this user can still decide it; otherwise (channel or "", why not)."""
    loaded = await runtime.cards.load(execution_id)
    if loaded is None:
        return "", "This deploy no longer exists, so there is nothing to decide."
    card = loaded[0]
    if not card.awaiting_approval:
        a = card.approval
        if a.decision in ("Approved", "Rejected"):
            who = f" by <@{a.decided_by}>" if a.decided_by else ""
            return card.channel, f"This deploy was already {a.decision.lower()}{who}."
        if card.finished:
            return card.channel, f"This deploy has already ended ({card.status})."
        return card.channel, "This deploy is not waiting for approval."
    # who asked and where it goes decide who may approve: taken from the execution as CodePipeline keeps it,
    # never from the stored card, which anyone who can write the table could rewrite
    try:
        facts = await execution_facts(runtime.aws, runtime.config.pipeline, execution_id)
    except (ClientError, BotoCoreError) as e:
        log.warning("could not read execution %s to check the approver: %s", execution_id, error_code(e))
        return card.channel, "I could not check this deploy with CodePipeline, so nothing was decided. Try again."
    variables = facts["variables_by_name"] if facts else {}
    environment = runtime.config.execution_environment(variables)
    requester = (variables.get("REQUESTED_BY") or "").strip() or None
    if facts is None or (environment, requester) != (card.environment, card.requested_by):
        log.warning("card %s does not match its execution (stored %s/%s, CodePipeline %s/%s): refused",
                    execution_id, card.environment, card.requested_by, environment, requester)
        await _audit(runtime, card, user, verb, "refused", "the stored card does not match its execution")
        return card.channel, ":no_entry: This card does not match its pipeline execution, so nothing was decided."
    decision = await runtime.policy.can_approve(user, environment, requester)
    if not decision:
        await _audit(runtime, card, user, verb, "refused", decision.reason)
        return card.channel, f":no_entry: {decision.reason}"
    return card


async def _open_card(runtime: Runtime, execution_id: str, user: str, channel: str,
                     verb: str) -> DeployCard | None:
    """The card if it can still be decided by this user; otherwise they are told why not."""
    found = await _decidable(runtime, execution_id, user, verb)
    if isinstance(found, DeployCard):
        return found
    await _tell(runtime, found[0] or channel, user, found[1])
    return None


async def decide(runtime: Runtime, execution_id: str, user: str, channel: str, status: str,
                 reason: str | None = None) -> None:
    verb = "approve" if status == "Approved" else "reject"
    card = await _open_card(runtime, execution_id, user, channel, verb)
    if card is None:
        return
    claim = {"won": False}
    now = datetime.now(UTC)

    def take(c: DeployCard) -> None:
        claim["won"] = claim_decision(c, user, status, now, CLAIM_LEASE)

    result = await runtime.cards.mutate(execution_id, take)
    if result is None or not claim["won"]:
        latest = result[0] if result else card
        who = f"<@{latest.approval.decided_by}>" if latest.approval.decided_by else "someone else"
        verb = "is recording a decision on" if latest.approval.decision in ("Approving", "Rejecting") else \
            "already decided"
        await _tell(runtime, card.channel, user, f"{who} {verb} this deploy.")
        return
    card = result[0]

    def release(c: DeployCard) -> None:
        release_claim(c, user)

    try:
        if not await _put_decision(runtime, card, user, status, reason, release):
            return
    except BaseException:
        # whatever stopped us before CodePipeline took it (Slack, DynamoDB, cancellation): the claim goes,
        # the buttons work again; a pod that dies here leaves a claim whose lease runs out
        with contextlib.suppress(Exception):
            await runtime.cards.mutate(execution_id, release)
            await runtime.cards.sync_message(execution_id)
        raise

    # CodePipeline has the decision; if what follows fails, the approval's own event still ends the claim
    decided_at = datetime.now(UTC)

    def record(c: DeployCard) -> None:
        record_decision(c, user, status, reason, decided_at)

    result = await runtime.cards.mutate(execution_id, record)
    await _audit(runtime, card, user, verb, "ok", reason)
    if result is not None:
        await runtime.state.clear_pending_approval(result[0].environment, result[0].service, execution_id)
    await runtime.cards.sync_message(execution_id)


async def _put_decision(runtime: Runtime, card: DeployCard, user: str, status: str, reason: str | None,
                        release: Callable[[DeployCard], None]) -> bool:
    """Tell CodePipeline; True once it took the decision, False if it refused (the person is told why)."""
    execution_id, verb = card.execution_id, "approve" if status == "Approved" else "reject"
    try:
        await runtime.cards.sync_message(execution_id)  # "Recording the decision...": shown if Slack takes it
    except SlackApiError as e:
        log.warning("could not show the decision being recorded: %s", e.response.get("error"))
    try:
        name = user
        try:
            info = await runtime.slack.users_info(user=user)
            name = str(info["user"].get("real_name") or info["user"].get("name") or user)
        except SlackApiError:
            pass
        summary = f"{status} in Slack by {name} ({user})" + (f": {reason}" if reason else "")
        # the token from CodePipeline for this execution, never the stored card's (in PARALLEL mode a token
        # is one execution's: a token copied into another card would decide that other execution)
        token = await approval_token(runtime.aws, runtime.config.pipeline, execution_id)
        if token is None:
            raise LookupError("no open approval request for this execution")
        await runtime.aws.call(
            "codepipeline", "put_approval_result", pipelineName=runtime.config.pipeline, stageName=APPROVAL_STAGE,
            actionName=APPROVAL_STAGE, token=token, result={"summary": summary[:512], "status": status})
    except (ClientError, BotoCoreError, LookupError) as e:
        code = error_code(e) if not isinstance(e, LookupError) else "NoOpenApproval"
        await runtime.cards.mutate(execution_id, release)
        await runtime.cards.sync_message(execution_id)
        await _audit(runtime, card, user, verb, "failed", code)
        if code in GONE_CODES or code == "NoOpenApproval":
            text = ("This approval is no longer open: it was answered elsewhere (the AWS console?) or has expired."
                    " The card will show the outcome.")
        else:
            text = (f":warning: I could not record your decision (CodePipeline said `{code}`)."
                    " Nothing changed; try again.")
        await _tell(runtime, card.channel, user, text)
        return False
    return True


def reject_view(card: DeployCard) -> View:
    return View(
        type="modal", callback_id=REJECT_VIEW, private_metadata=card.execution_id,
        title="Reject deploy", submit="Reject", close="Cancel",
        blocks=[
            SectionBlock(text=f"Reject the {card.environment} deploy of *{card.service_label}*"
                              f" requested by <@{card.requested_by or 'unknown'}>?"),
            InputBlock(block_id="reason", label="Why? (the requester sees this)",
                       element=PlainTextInputElement(action_id="reason", multiline=True, max_length=400)),
        ])


def checking_view(execution_id: str) -> View:
    """Opened at once: a trigger_id lives 3 seconds, and the checks that follow read DynamoDB and Slack."""
    return View(type="modal", callback_id=REJECT_VIEW, private_metadata=execution_id, title="Reject deploy",
                close="Close", blocks=[SectionBlock(text=":hourglass_flowing_sand: Checking this deploy...")])


def refusal_view(execution_id: str, text: str) -> View:
    return View(type="modal", callback_id=REJECT_VIEW, private_metadata=execution_id, title="Reject deploy",
                close="Close", blocks=[SectionBlock(text=text)])


def register(app: AsyncApp, runtime: Runtime) -> None:
    async def ack_click(ack: AsyncAck) -> None:
        await ack()

    async def approve(body: dict[str, Any]) -> None:
        await decide(runtime, body["actions"][0]["value"], body["user"]["id"],
                     body.get("channel", {}).get("id", ""), "Approved")

    async def ask_reason(body: dict[str, Any]) -> None:
        user, channel = body["user"]["id"], body.get("channel", {}).get("id", "")
        execution_id = str(body["actions"][0]["value"])
        try:
            opened = await runtime.slack.views_open(trigger_id=body["trigger_id"], view=checking_view(execution_id))
        except SlackApiError as e:  # the trigger expired on the way (Slack slow to deliver): say what to do
            log.warning("could not open the reject modal: %s", e.response.get("error"))
            await _tell(runtime, channel, user, "Slack took too long to open the Reject form; press Reject again.")
            return
        view_id = str(opened["view"]["id"])
        try:
            found = await _decidable(runtime, execution_id, user, "reject")
        except Exception:  # DynamoDB or Slack down: the open modal says so instead of checking forever
            await runtime.slack.views_update(view_id=view_id, view=refusal_view(
                execution_id, ":warning: I could not check this deploy right now. Close this and press Reject"
                              " again in a minute."))
            raise
        view = reject_view(found) if isinstance(found, DeployCard) else refusal_view(execution_id, found[1])
        await runtime.slack.views_update(view_id=view_id, view=view)

    async def check_reason(ack: AsyncAck, view: dict[str, Any]) -> None:
        value = view.get("state", {}).get("values", {}).get("reason", {}).get("reason", {}).get("value") or ""
        if len(value.strip()) < MIN_REASON:
            await ack(response_action="errors", errors={"reason": "Say why, so the requester knows what to fix."})
        else:
            await ack()

    async def reject(body: dict[str, Any], view: dict[str, Any]) -> None:
        value = view.get("state", {}).get("values", {}).get("reason", {}).get("reason", {}).get("value") or ""
        if len(value.strip()) < MIN_REASON:
            return
        loaded = await runtime.cards.load(view.get("private_metadata", ""))
        channel = loaded[0].channel if loaded else ""
        await decide(runtime, view.get("private_metadata", ""), body["user"]["id"], channel, "Rejected",
                     value.strip())

    app.action(APPROVE_ACTION)(ack=ack_click, lazy=[runtime.work.track(approve)])
    app.action(REJECT_ACTION)(ack=ack_click, lazy=[runtime.work.track(ask_reason, acks_first=False)])  # its trigger
    app.view(REJECT_VIEW)(ack=check_reason, lazy=[runtime.work.track(reject)])
    for link_button in ("open_pipeline", "open_logs"):  # URL buttons still send a click: acknowledge it
        app.action(link_button)(ack_click)
