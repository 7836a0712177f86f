"""`/erp deploy <service|all> <env>` and `/erp deploy <env>`.

The deploy card is posted in the environment's channel first, so its channel
and ts can be handed to the pipeline (SLACK_CHANNEL, SLACK_THREAD_TS) for the
buildspec to reply in its thread. If the pipeline cannot start, the card is
deleted again: no card without an execution.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from slack_bolt.async_app import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.aws.clients import BotoCoreError, ClientError, error_code
from bot.aws.state import AuditRecord
from bot.config import Environment
from bot.delivery.command_parser import ErpCommand
from bot.delivery.deploy_card import DeployCard
from bot.delivery.deploy_gate import DeployGrant, freeze_summary
from bot.delivery.escaping import escape_text
from bot.jsonlog import log_fields
from bot.runtime import Runtime
from bot.slack.channel_membership import UNPOSTABLE
from bot.slack.deploy_card_blocks import render_card
from handlers.erp_command import Invocation
from handlers.locks import describe

log = logging.getLogger(__name__)

GLASS_SECONDS = 86400  # a broken glass lets its deploy through for at most a day
REQUEST_DEDUP_SECONDS = 30  # the same person asking for the same deploy again within this is a double submit

START_ERRORS = {
    "PipelineNotFoundException": "The pipeline `{pipeline}` does not exist here: check `pipeline` in the bot's config.",
    "ThrottlingException": "AWS is throttling CodePipeline right now.",
    "ConcurrentPipelineExecutionsLimitExceededException": "Too many executions of `{pipeline}` are running.",
    "ValidationException": "CodePipeline refused the request ({detail}).",
}


async def link_to(runtime: Runtime, channel: str, ts: str | None) -> str:
    if not ts:
        return f"<#{channel}>"
    try:
        resp = await runtime.slack.chat_getPermalink(channel=channel, message_ts=ts)
        return f"<{resp['permalink']}|the deploy card> in <#{channel}>"
    except SlackApiError:
        return f"<#{channel}>"


@dataclass(frozen=True)
class Launch:
    """What a deploy of a particular kind adds: `/erp promote` names the image (no build) and says where from."""

    variables: dict[str, str]
    note: str  # on the card: "Promoted from dev: ..."
    verb: str = "Promoting"
    source_commit: str | None = None  # the Source action's revision: the chart and values dev ran with
    audits: tuple[AuditRecord, ...] = ()  # recorded once the pipeline has started (an override, say)


Answer = Callable[[str], Awaitable[None]]
Audit = Callable[..., Awaitable[None]]
Prepare = Callable[[Answer, Audit], Awaitable[Launch | None]]


async def deploy(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    await run_deploy(command, who, runtime, respond)


async def run_deploy(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond, *,
                     action: str = "deploy", prepare: Prepare | None = None) -> None:
    """Who may, the lock and the freeze, `prepare`'s own checks (None: refused, already said), one waiting
    approval per service, a double submit; then the card and the pipeline."""
    assert command.environment is not None
    env = runtime.config.environments[command.environment]
    service = command.service or "changed"
    target = f"{'all services' if service == 'all' else 'changed services' if service == 'changed' else service}" \
             f" to {env.name}"

    async def answer(text: str) -> None:
        await respond(response_type="ephemeral", replace_original=True, text=text)

    async def audit(outcome: str, detail: str | None = None, execution_id: str | None = None) -> None:
        await runtime.state.record_audit(AuditRecord(actor=who.user_id, action=action, environment=env.name,
                                                     service=service, outcome=outcome, detail=detail,
                                                     execution_id=execution_id))

    decision = await runtime.policy.can_deploy(who.user_id, env.name)
    if not decision:
        await audit("refused", decision.reason)
        await answer(f":no_entry: {decision.reason}")
        return
    grant = await _gate(command, who, runtime, env, answer, audit)
    if grant is False:
        return
    launch = await prepare(answer, audit) if prepare is not None else None
    if prepare is not None and launch is None:
        return
    for pending_service in {service, "all"}:
        marker = await runtime.state.pending_approval(env.name, pending_service)
        if marker:
            link = await link_to(runtime, str(marker.get("channel", env.channel)), marker.get("ts"))
            await answer(f":lock: A {env.name} deploy of {pending_service} is already waiting for approval: {link}."
                         " Approve or reject it first.")
            return
    # a double submit is the same request twice: a re-deploy right after a deploy is a request of its own
    request = f"{service}#{env.name}" + (f"#{action}" if action != "deploy" else "")
    if not await runtime.state.put_marker(f"REQ#{who.user_id}", request, REQUEST_DEDUP_SECONDS):
        await answer(f"You asked to deploy {target} a moment ago; that deploy is starting in <#{env.channel}>.")
        return

    card: DeployCard | None = None
    try:
        card = await _post_card_and_start(who, runtime, env, service, answer, audit,
                                          grant if isinstance(grant, DeployGrant) else None, launch)
    finally:
        if card is None:  # nothing started, whatever stopped it: the same command works again at once
            with contextlib.suppress(Exception):
                await runtime.state.delete_marker(f"REQ#{who.user_id}", request)
    if card is None:
        return
    try:
        await audit("started", execution_id=card.execution_id)
        for record in launch.audits if launch else ():
            await runtime.state.record_audit(replace(record, execution_id=card.execution_id))
        # the event consumer may have made it already, from the same variables (but without the gate's note)
        if not await runtime.cards.create(card) and (card.gate_note or card.origin_note):
            gate_note, origin_note = card.gate_note, card.origin_note

            def notes(c: DeployCard) -> None:
                c.gate_note, c.origin_note = gate_note, origin_note
            await runtime.cards.mutate(card.execution_id, notes)
        await runtime.cards.sync_message(card.execution_id)
    except Exception as e:  # whatever it is, the deploy runs: say so, not "failed"
        # the deploy runs and its message is posted: the consumer builds the card from the pipeline's events
        log.warning("deploy %s started; its card catches up from the events: %s", card.execution_id,
                    error_code(e), extra=log_fields(user=who.user_id, outcome="started", service=service,
                                                     environment=env.name, execution_id=card.execution_id))
    link = await link_to(runtime, env.channel, card.ts)
    await answer(f":rocket: {launch.verb if launch else 'Deploying'} {target}: follow {link}.")


async def _gate(command: ErpCommand, who: Invocation, runtime: Runtime, env: Environment,
                answer: Callable[[str], Awaitable[None]],
                audit: Callable[..., Awaitable[None]]) -> DeployGrant | bool:
    """The environment's lock and freeze, read now (never from a card): False (the person told why) if the
    deploy may not go; a grant for the pipeline when it goes through a lock or a freeze; True otherwise."""
    now = time.time()
    lock = await runtime.state.get_lock(env.name)
    lock_id = None
    if lock is not None and lock.active(now):
        if lock.holder != who.user_id:
            await audit("refused", f"locked by {lock.holder}")
            await answer(f":lock: {describe(lock, now)}. Ask <@{lock.holder}>, or an approver can"
                         f" `/erp unlock {env.name}`.")
            return False
        lock_id = lock.id
    break_glass, glass_until = None, None
    if env.freeze is not None:
        moment = datetime.fromtimestamp(now, UTC)
        state = env.freeze.state_at(moment)
        if state.frozen and not command.break_glass:
            await audit("refused", f"frozen: {state.window}")
            again = (f"/erp promote {command.service}" if command.verb == "promote"
                     else f"/erp deploy {command.service or '<service>'} {env.name}")
            await answer(f":snowflake: {freeze_summary(env.name, env.freeze, state, moment)}. An approver can break"
                         f" the glass for one deploy: `{again} break-glass <reason>`.")
            return False
        if state.frozen:
            decision = await runtime.policy.is_approver(who.user_id, env.name, "You can't break the glass: only")
            if not decision:
                await audit("refused", f"break-glass: {decision.reason}"[:200])
                await answer(f":no_entry: {decision.reason}")
                return False
            break_glass = command.break_glass
            # this freeze only, and a day at most (a prod approval may take that long)
            glass_until = int(now) + GLASS_SECONDS
            if state.opens_at is not None:
                glass_until = min(glass_until, int(state.opens_at.timestamp()))
    if lock_id is None and break_glass is None:
        return True
    return DeployGrant(execution_id="", requested_by=who.user_id, lock_id=lock_id, break_glass=break_glass,
                       broken_by=who.user_id if break_glass else None, glass_until=glass_until)


def _gate_note(grant: DeployGrant) -> str:
    notes = []
    if grant.lock_id is not None:
        notes.append(f":lock: Deployed under <@{grant.requested_by}>'s lock")
    if grant.break_glass:
        notes.append(f":rotating_light: Freeze broken by <@{grant.broken_by}>: \"{escape_text(grant.break_glass)}\"")
    return " · ".join(notes)


async def _post_card_and_start(who: Invocation, runtime: Runtime, env: Environment, service: str,
                               answer: Callable[[str], Awaitable[None]],
                               audit: Callable[..., Awaitable[None]],
                               grant: DeployGrant | None = None, launch: Launch | None = None) -> DeployCard | None:
    """Post the card, then start the pipeline with the card's place; None (the person told why) if nothing
    started."""
    card = DeployCard(execution_id="", pipeline=runtime.config.pipeline, environment=env.name, service=service,
                      channel=env.channel, requested_by=who.user_id, needs_approval=env.approval,
                      gate_note=_gate_note(grant) if grant else None, origin_note=launch.note if launch else None)
    text, blocks = render_card(card)
    try:
        posted = await runtime.slack.chat_postMessage(channel=env.channel, text=text, blocks=blocks)
    except SlackApiError as e:
        error = str(e.response.get("error"))
        if error not in UNPOSTABLE:
            raise
        if error == "not_in_channel":
            runtime.membership.saw(env.channel, False)
        await audit("refused", error)
        # a private channel the bot is not in answers channel_not_found: the invite is the fix there too
        hint = runtime.membership.invite_hint(env.channel) if error != "is_archived" else \
            f"<#{env.channel}> is archived: unarchive it, or point `{env.name}` at another channel."
        await answer(f":warning: Nothing was started. {hint}")
        return None
    runtime.membership.saw(env.channel, True)
    card.ts = str(posted["ts"])
    variables = {"SERVICE": service if service != "changed" else " ", "ENVIRONMENT": env.name,
                 "REQUESTED_BY": who.user_id, "SLACK_CHANNEL": env.channel, "SLACK_THREAD_TS": card.ts,
                 **(launch.variables if launch else {})}
    try:
        started = await runtime.aws.call(
            "codepipeline", "start_pipeline_execution", name=runtime.config.pipeline,
            variables=[{"name": k, "value": v} for k, v in variables.items()],
            **({"sourceRevisions": [{"actionName": "Source", "revisionType": "COMMIT_ID",
                                     "revisionValue": launch.source_commit}]} if launch and launch.source_commit
               else {}),
            clientRequestToken=str(uuid.uuid4()))  # botocore's retries reuse it: one execution per request
    except (ClientError, BotoCoreError) as e:
        code = error_code(e)
        with contextlib.suppress(SlackApiError):  # no card without an execution
            await runtime.slack.chat_delete(channel=env.channel, ts=card.ts)
        reason = START_ERRORS.get(code, "CodePipeline answered `{detail}`." if isinstance(e, ClientError)
                                  else "I can't reach CodePipeline right now.")
        await audit("failed", code)
        log.warning("could not start the pipeline: %s", code)
        await answer(":warning: " + reason.format(pipeline=runtime.config.pipeline, detail=code)
                     + " Nothing was started; try again in a minute.")
        return None
    card.execution_id = str(started["pipelineExecutionId"])
    if grant is not None:
        # the pipeline's Deploy action lets exactly this execution through the lock or the freeze
        grant = DeployGrant(card.execution_id, grant.requested_by, grant.lock_id, grant.break_glass, grant.broken_by,
                            grant.glass_until)
        try:
            await runtime.state.put_grant(env.name, grant)
        except Exception as e:
            log.warning("could not record the grant of %s: %s", card.execution_id, error_code(e))
            card.gate_note = (":warning: I could not record that this deploy may pass the lock or the freeze, so"
                              " its Deploy stage will refuse it; ask again in a minute.")
        if grant.break_glass:
            try:  # the deploy has started: a failed audit write must not turn it into "failed" (and a retry)
                await runtime.state.record_audit(AuditRecord(
                    actor=who.user_id, action="break_glass", environment=env.name, service=service, outcome="ok",
                    detail=grant.break_glass[:200], execution_id=card.execution_id))
            except Exception as e:
                log.warning("could not audit the broken glass of %s: %s", card.execution_id, error_code(e))
    return card
