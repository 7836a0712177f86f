"""Approvals that do not rot: reminders, escalation, and what a newer deploy supersedes.

A prod approval that waits reminds its approvers in the card's thread once per `approval_reminders.every`
(one note per interval, whichever replica sweeps first: the card's notes are keyed), and after
`escalate_after` mentions `escalate_to`. The card shows since when it waits and when it expires. All of it
stops the moment someone decides, in Slack or in the console. When a newer execution of the same service
reaches the approval, the older waiting one says so (a link), and with `reject_superseded` is rejected.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime, timedelta

from slack_sdk.errors import SlackApiError

from bot.aws.clients import error_code
from bot.aws.codepipeline import APPROVAL_STAGE, approval_token
from bot.aws.state import BOT_ACTOR, AuditRecord
from bot.delivery.access_policy import mention_list
from bot.delivery.card_lifecycle import claim, record_decision, release_claim
from bot.delivery.deploy_card import DeployCard, ThreadNote, approval_reminders, started_first, superseded
from bot.runtime import Runtime

log = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(seconds=60)
REJECT_TTL = 8 * 86400


def _remind(c: DeployCard, *, now: datetime, every: timedelta, approvers: str, escalate_after: timedelta | None,
            escalation: str) -> list[ThreadNote]:
    notes = approval_reminders(c, now, every, approvers, escalate_after, escalation)
    c.outbox.extend([n.key, n.text] for n in notes)  # posted by the publisher, never lost
    return notes


async def sweep_approvals(runtime: Runtime, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    touched: list[str] = []
    for env in runtime.config.environments.values():
        settings = env.approval_reminders
        if settings is None:
            continue
        try:
            waiting = await runtime.state.pending_approvals(env.name)
        except Exception as e:
            log.warning("could not list %s's waiting approvals: %s", env.name, error_code(e))
            continue
        approvers, escalation = mention_list(env.approvers), mention_list(settings.escalate_to)
        escalate_after = timedelta(seconds=settings.escalate_after_seconds) \
            if settings.escalate_after_seconds is not None else None

        remind = functools.partial(_remind, now=now, every=timedelta(seconds=settings.every_seconds),
                                   approvers=approvers, escalate_after=escalate_after, escalation=escalation)

        if settings.reject_superseded:
            try:
                for pending in await runtime.state.markers(f"SUPERSEDED#{env.name}"):
                    await reject_superseded(runtime, env.name, str(pending["sk"]), str(pending.get("newer", "")))
            except Exception as e:
                log.warning("could not reject a superseded approval in %s yet: %s", env.name, error_code(e))
        for marker in waiting:
            execution_id = str(marker.get("execution_id", ""))
            try:
                result = await runtime.cards.mutate(execution_id, remind)
                if result is not None and result[1]:
                    touched.append(execution_id)
            except Exception as e:
                log.warning("could not remind the approvers of %s: %s", execution_id, error_code(e))
    if touched:
        await runtime.publisher.enqueue(touched)


async def sweep_approvals_forever(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(runtime.approval_sweep_seconds)
        try:
            await sweep_approvals(runtime)
        except Exception as e:
            log.warning("the approval sweep failed: %s", error_code(e))


async def supersede_older(runtime: Runtime, card: DeployCard, other_id: str) -> None:
    """`card` has just reached the approval while `other_id` waits there too: the one that started first
    is superseded by the other (a "Retry failed stage" of an old execution does not supersede a newer one)."""
    loaded = await runtime.cards.load(other_id)
    if loaded is None:
        return
    other = loaded[0]
    if started_first(other, card):
        older, newer = other_id, card
    else:  # the other one is newer: it stays the one waiting
        older, newer = card.execution_id, other
        await runtime.state.swap_pending_approval(other.environment, other.service, other.execution_id,
                                                  channel=other.channel, ts=other.ts or "")
    await supersede(runtime, older, newer)


async def supersede(runtime: Runtime, older: str, newer: DeployCard) -> None:
    """`older` waited for the approval `newer` has now reached: say so on it, and reject it if asked."""
    env = runtime.config.environments[newer.environment]
    where = f"<#{newer.channel}>"
    if newer.ts:
        try:
            link = await runtime.slack.chat_getPermalink(channel=newer.channel, message_ts=newer.ts)
            where = f"<{link['permalink']}|its card>"
        except SlackApiError:
            pass

    def mark(c: DeployCard) -> list[ThreadNote]:
        notes = superseded(c, newer.execution_id, where)
        c.outbox.extend([n.key, n.text] for n in notes)
        return notes

    result = await runtime.cards.mutate(older, mark)
    if result is not None and result[1]:
        await runtime.publisher.enqueue([older])
    if result is None or not result[0].superseded_by:
        return  # decided meanwhile
    if env.approval_reminders and env.approval_reminders.reject_superseded:
        # durable: the sweep retries it until it is done, decided by someone, or gone
        await runtime.state.put_marker(*_reject_key(newer.environment, older), REJECT_TTL, only_if_absent=False,
                                       newer=newer.execution_id)
        await reject_superseded(runtime, newer.environment, older, newer.execution_id)


def _reject_key(env: str, execution_id: str) -> tuple[str, str]:
    return f"SUPERSEDED#{env}", execution_id


async def reject_superseded(runtime: Runtime, env: str, older: str, newer: str) -> None:
    """Reject `older` as superseded by `newer`, as an approver's click would: the decision claimed on its card
    first (never over a person who is deciding it), CodePipeline told, then recorded."""
    now = datetime.now(UTC)
    won = {"claim": False}

    def take(c: DeployCard) -> None:
        won["claim"] = claim(c, BOT_ACTOR, "Rejected", now, CLAIM_LEASE)

    result = await runtime.cards.mutate(older, take)
    if result is None or not result[0].awaiting_approval:
        await runtime.state.delete_marker(*_reject_key(env, older))  # decided or gone: nothing to do
        return
    if not won["claim"]:
        return  # someone is deciding it right now: their decision stands, or the next sweep tries again
    summary = f"Superseded by execution {newer} (erp-chatops)"
    try:
        token = await approval_token(runtime.aws, runtime.config.pipeline, older)
        if token is not None:
            await runtime.aws.call("codepipeline", "put_approval_result", pipelineName=runtime.config.pipeline,
                                   stageName=APPROVAL_STAGE, actionName=APPROVAL_STAGE, token=token,
                                   result={"status": "Rejected", "summary": summary})
    except Exception:
        await runtime.cards.mutate(older, lambda c: release_claim(c, BOT_ACTOR))  # the buttons work again
        raise
    await runtime.cards.mutate(older, lambda c: record_decision(c, BOT_ACTOR, "Rejected", summary, datetime.now(UTC)))
    await runtime.state.delete_marker(*_reject_key(env, older))
    await runtime.state.record_audit(AuditRecord(
        actor=BOT_ACTOR, action="reject", environment=env, service=result[0].service, outcome="ok",
        detail=f"superseded by {newer}", execution_id=older))
    await runtime.publisher.enqueue([older])
