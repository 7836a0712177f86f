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
from bot.aws.state import AuditRecord
from bot.delivery.access_policy import mention_list
from bot.delivery.deploy_card import DeployCard, ThreadNote, approval_reminders, superseded
from bot.runtime import Runtime

log = logging.getLogger(__name__)


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
    if result is None or not result[1]:
        return  # decided meanwhile, or already said
    await runtime.publisher.enqueue([older])
    if not (env.approval_reminders and env.approval_reminders.reject_superseded):
        return
    token = await approval_token(runtime.aws, runtime.config.pipeline, older)
    if token is None:
        return  # answered or expired meanwhile: nothing to reject
    await runtime.aws.call("codepipeline", "put_approval_result", pipelineName=runtime.config.pipeline,
                           stageName=APPROVAL_STAGE, actionName=APPROVAL_STAGE, token=token,
                           result={"status": "Rejected",
                                   "summary": f"Superseded by execution {newer.execution_id} (erp-chatops)"})
    await runtime.state.record_audit(AuditRecord(
        actor="erp-chatops", action="reject", environment=newer.environment, service=newer.service, outcome="ok",
        detail=f"superseded by {newer.execution_id}", execution_id=older))
