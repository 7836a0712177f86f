"""`/erp lock <env> [for 2h] [reason]`, `/erp unlock <env>`, `/erp locks`, and the locks' sweeper.

A lock belongs to a person, has a reason, an age and an expiry. While it holds, only its holder's
`/erp deploy` goes to the environment (the pipeline's Deploy action checks it too, bot/ci/build_steps.py);
rollbacks stay possible. Taking over someone's lock asks the taker to confirm, tells the previous holder
in the environment's channel and is audited. Only the holder or an approver may unlock. The sweeper
reminds the holder before the lock expires, says when it has, and publishes each environment's freeze
calendar for the pipeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock

from bot.aws.clients import error_code
from bot.aws.state import AuditRecord
from bot.delivery.command_parser import MAX_REASON, ErpCommand
from bot.delivery.deploy_gate import EnvLock, pipeline_refusal
from bot.delivery.escaping import escape_text
from bot.delivery.freeze_calendar import in_words
from bot.runtime import Runtime
from handlers.erp_command import Invocation

log = logging.getLogger(__name__)

TAKEOVER_ACTION = "lock_takeover"
TAKEOVER_CANCEL_ACTION = "lock_takeover_cancel"
PUBLISH_EVERY_ROUNDS = 60  # the freeze calendars again every ~30 min (in case the table lost them)


def slack_time(epoch: int) -> str:
    """Shown in each reader's own time zone by Slack, with a UTC fallback."""
    fallback = time.strftime("%a %H:%M UTC", time.gmtime(epoch))
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{fallback}>"


def describe(lock: EnvLock, now: float | None = None) -> str:
    """`prod is locked by @U since … (42m ago) until … (in 1h 18m): "reason"`, the reason escaped."""
    safe = EnvLock(lock.environment, lock.holder, escape_text(lock.reason), lock.since, lock.until, lock.reminded,
                   lock.id)
    return safe.summary(time.time() if now is None else now, at=slack_time)


async def _say(runtime: Runtime, channel: str, text: str) -> None:
    """A line in the environment's channel; the lock stands whether or not Slack takes it."""
    try:
        await runtime.slack.chat_postMessage(channel=channel, text=text)
    except SlackApiError as e:
        log.warning("could not post a lock note in %s: %s", channel, e.response.get("error"))
    except Exception as e:  # a timeout or a dropped connection: the lock has changed all the same
        log.warning("could not post a lock note in %s: %s", channel, error_code(e))


async def _audit(runtime: Runtime, actor: str, action: str, env: str, outcome: str, detail: str | None) -> None:
    await runtime.state.record_audit(AuditRecord(actor=actor, action=action, environment=env, outcome=outcome,
                                                 detail=detail))


def _reason_text(reason: str) -> str:
    return f': "{escape_text(reason)}"' if reason else ""


NOTED_SECONDS = 8 * 86400  # a card carrying a lock note is looked at again until then (approvals last 7 days)
REASON_ON_CARD = 120  # characters of the lock's reason on a card, cut before escaping: the warning stays whole


def _noted(env_name: str) -> str:
    """The cards of this environment whose message carries a lock note: looked at again until it is gone, even
    once another deploy of the service took their place among the waiting ones."""
    return f"LOCKNOTE#{env_name}"


def _lock_note(env_name: str, lock: EnvLock) -> str:
    reason = lock.reason[:REASON_ON_CARD].replace("`", "'")
    return (f":lock: {env_name} is locked by <@{lock.holder}> until {slack_time(lock.until)}{_reason_text(reason)}:"
            f" approved now, this deploy's Deploy stage would refuse it. `/erp unlock {env_name}` first (the holder"
            " or an approver).")


async def show_on_waiting_cards(runtime: Runtime, env_name: str, lock: EnvLock | None) -> None:
    """Each card waiting for approval in this environment says whether the lock would stop it at its Deploy
    stage (it has no grant under this lock: it started before it, or someone else holds it), and says nothing
    once the lock is gone. Run when a lock changes and on every sweep: the note is recorded before the card
    changes and cleared only after its message was edited, so a replica dying or Slack refusing an edit in
    between only delays it to the next sweep. The text holds no relative time, so an unchanged lock edits
    nothing."""
    try:
        waiting = {str(m.get("execution_id") or "") for m in await runtime.state.pending_approvals(env_name)}
        noted = {str(m["sk"]) for m in await runtime.state.markers(_noted(env_name))}
    except Exception as e:
        log.warning("could not read %s's waiting cards: %s", env_name, error_code(e))
        return
    now = datetime.now(UTC)
    for execution in sorted((waiting | noted) - {""}):
        try:
            note = None
            if execution in waiting and lock is not None and lock.active(now.timestamp()):
                grant = await runtime.state.get_grant(env_name, execution)
                if pipeline_refusal(env_name, lock, None, grant, now) is not None:
                    note = _lock_note(env_name, lock)
                    await runtime.state.put_marker(_noted(env_name), execution, NOTED_SECONDS, only_if_absent=False)

            def show(card: Any, note: str | None = note) -> None:
                card.lock_note = note
            if await runtime.cards.mutate(execution, show) is not None:
                await runtime.cards.sync_message(execution)  # edits only if the rendering changed
            if note is None and execution in noted:
                await runtime.state.delete_marker(_noted(env_name), execution)
        except Exception as e:  # one card's trouble never keeps the others from their note
            log.warning("could not show %s's lock on card %s: %s", env_name, execution, error_code(e))


def _show_soon(runtime: Runtime, env_name: str, lock: EnvLock | None) -> None:
    """The cards follow the lock in the background: the person's answer waits for no card edit."""
    runtime.work.spawn(show_on_waiting_cards(runtime, env_name, lock))


async def lock(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    assert command.environment is not None
    env = runtime.config.environments[command.environment]
    settings = runtime.config.locks

    async def answer(text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        await respond(response_type="ephemeral", replace_original=True, text=text, blocks=blocks)

    decision = await runtime.policy.can_lock(who.user_id, env.name)
    if not decision:
        await _audit(runtime, who.user_id, "lock", env.name, "refused", decision.reason)
        await answer(f":no_entry: {decision.reason}")
        return
    now = int(time.time())
    seconds = command.duration or settings.default_seconds
    current = await runtime.state.get_lock(env.name)
    if current is not None and current.active(now):
        if current.holder == who.user_id:  # the holder again: extend it (and take the new reason, if any)
            # a new reason alone never cuts the lock short: the default only ever lengthens it
            until = now + seconds if command.duration else max(current.until, now + seconds)
            renewed = EnvLock(env.name, who.user_id, command.reason or current.reason, current.since, until,
                              id=current.id)  # the same lock, longer: a deploy granted under it still passes
            if not await runtime.state.take_lock(renewed, replacing=current):
                await answer("The lock changed just now; look at `/erp locks` and try again.")
                return
            await _audit(runtime, who.user_id, "lock", env.name, "ok",
                         f"until {in_words_s(until - now)} from now: {renewed.reason}"[:200])
            _show_soon(runtime, env.name, renewed)
            await answer(f":lock: {describe(renewed, now)}.")
            return
        value = json.dumps({"env": env.name, "lock": current.id, "seconds": seconds,  # Slack counts characters:
                            "reason": (command.reason or "")[:MAX_REASON]}, ensure_ascii=False)  # keep them few
        text = f":lock: {describe(current, now)}. Take it over? <@{current.holder}> will be told."
        await answer(text, [SectionBlock(text=text).to_dict(), ActionsBlock(elements=[
            ButtonElement(text="Take over", action_id=TAKEOVER_ACTION, value=value, style="danger"),
            ButtonElement(text="Cancel", action_id=TAKEOVER_CANCEL_ACTION, value=env.name)]).to_dict()])
        return
    if current is not None:  # run out, not swept yet: its holder hears it expired before anyone takes it
        await _expire(runtime, env.name, current)
        now = int(time.time())
    taken = EnvLock(env.name, who.user_id, command.reason or "", now, now + seconds)
    if not await runtime.state.take_lock(taken):
        await answer("Someone locked it a moment ago; look at `/erp locks` and try again.")
        return
    await _audit(runtime, who.user_id, "lock", env.name, "ok", f"for {in_words_s(seconds)}: {taken.reason}"[:200])
    _show_soon(runtime, env.name, taken)
    await _say(runtime, env.channel, f":lock: <@{who.user_id}> locked {env.name} for {in_words_s(seconds)}"
                                     f"{_reason_text(taken.reason)}. Only their deploys go out until"
                                     f" {slack_time(taken.until)} or `/erp unlock {env.name}`; rollbacks still work.")
    await answer(f":lock: {describe(taken, now)}. `/erp unlock {env.name}` when you are done.")


def in_words_s(seconds: int) -> str:
    return in_words(timedelta(seconds=seconds))


async def unlock(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    assert command.environment is not None
    env = runtime.config.environments[command.environment]

    async def answer(text: str) -> None:
        await respond(response_type="ephemeral", replace_original=True, text=text)

    current = await runtime.state.get_lock(env.name)
    if current is None or not current.active(time.time()):
        await answer(f"{env.name} is not locked.")
        return
    if current.holder != who.user_id:
        decision = await runtime.policy.is_approver(who.user_id, env.name,
                                                    f"Only <@{current.holder}>, who holds the lock, or")
        if not decision:
            await _audit(runtime, who.user_id, "unlock", env.name, "refused", decision.reason)
            await answer(f":no_entry: {decision.reason.replace(' can.', ' can unlock it.')}")
            return
    if not await runtime.state.release_lock(current):
        await answer("The lock changed just now; look at `/erp locks` and try again.")
        return
    await _audit(runtime, who.user_id, "unlock", env.name, "ok", f"lock of {current.holder}")
    _show_soon(runtime, env.name, None)
    by_other = f" (held by <@{current.holder}>)" if current.holder != who.user_id else ""
    await _say(runtime, env.channel, f":unlock: <@{who.user_id}> unlocked {env.name}{by_other}; deploys are open"
                                     " again.")
    await answer(f":unlock: {env.name} is unlocked.")


async def locks(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    now = time.time()
    lines = []
    for name in runtime.config.environments:
        current = await runtime.state.get_lock(name)
        lines.append(f":lock: {describe(current, now)}" if current is not None and current.active(now)
                     else f":white_circle: {name} is not locked")
    await respond(response_type="ephemeral", replace_original=True, text="\n".join(lines))


async def lock_after_rollback(runtime: Runtime, env_name: str, user: str, what: str) -> str | None:
    """The environment's `lock_after_rollback`: lock it for the one who rolled back, unless already locked.
    Returns the line to add to the rollback's message."""
    env = runtime.config.environments[env_name]
    if env.lock_after_rollback is None:
        return None
    now = int(time.time())
    current = await runtime.state.get_lock(env_name)
    if current is not None and not current.active(now):  # run out, not swept yet: said expired first
        await _expire(runtime, env_name, current)
    taken = EnvLock(env_name, user, f"rolled back {what}", now, now + env.lock_after_rollback)
    if not await runtime.state.take_lock(taken):
        return None  # somebody holds it already: theirs stands
    await _audit(runtime, user, "lock", env_name, "ok", f"after the rollback of {what}"[:200])
    _show_soon(runtime, env_name, taken)
    return (f":lock: {env_name} is locked for <@{user}> until {slack_time(taken.until)} so nobody redeploys"
            f" straight away; `/erp unlock {env_name}` when it is safe.")


async def _expire(runtime: Runtime, name: str, current: EnvLock) -> None:
    if not await runtime.state.release_lock(current):  # one replica wins and tells; an extended lock stays
        return
    channel = runtime.config.environments[name].channel
    await _say(runtime, channel, f":unlock: <@{current.holder}>'s lock on {name} expired at"
                                 f" {slack_time(current.until)}; deploys are open again.")
    try:
        await _audit(runtime, current.holder, "lock_expired", name, "ok", None)
    except Exception as e:  # the channel knows; the trail misses one line, which the log keeps
        log.warning("could not audit the expiry of %s's lock: %s", name, error_code(e))


async def sweep_locks(runtime: Runtime, unpublished: set[str]) -> None:
    """Publish the calendars not yet published, then remind and expire; each environment on its own, so one
    environment's trouble never stops another's."""
    now = int(time.time())
    held: dict[str, EnvLock | None] = {}  # each environment's lock once expired or reminded, for its cards
    for name, env in runtime.config.environments.items():
        try:
            if name in unpublished:
                promotion = runtime.config.promotion
                await runtime.state.publish_freeze_calendar(
                    name, env.freeze, promotion.source if promotion and promotion.target == name else None)
                unpublished.discard(name)
        except Exception as e:
            log.warning("could not publish %s's freeze calendar yet: %s", name, error_code(e))
        try:
            current = await runtime.state.get_lock(name)
            held[name] = current if current is not None and current.active(now) else None
            if current is None:
                continue
            if not current.active(now):
                await _expire(runtime, name, current)
            elif not current.reminded and current.until - now <= runtime.config.locks.remind_before_seconds:
                if await runtime.state.mark_lock_reminded(current):
                    await _say(runtime, env.channel,
                               f":hourglass: <@{current.holder}>, your lock on {name} expires"
                               f" {slack_time(current.until)} (in {in_words_s(current.until - now)})."
                               f" `/erp lock {name} for 1h` extends it; `/erp unlock {name}` ends it now.")
        except Exception as e:
            log.warning("the lock sweep of %s failed: %s", name, error_code(e))
    # then the cards, once every environment's expiry and reminder is done: a slow Slack delays only this
    for name in runtime.config.environments:
        if name in held:  # not when its lock could not be read: the next sweep does it
            await show_on_waiting_cards(runtime, name, held[name])


async def sweep_locks_forever(runtime: Runtime) -> None:
    rounds = 0
    unpublished = set(runtime.config.environments)
    while True:
        if rounds % PUBLISH_EVERY_ROUNDS == 0:  # again now and then, in case the item was lost
            unpublished = set(runtime.config.environments)
        await sweep_locks(runtime, unpublished)
        rounds += 1
        await asyncio.sleep(runtime.lock_sweep_seconds)


def register(app: AsyncApp, runtime: Runtime) -> None:
    async def ack_click(ack: AsyncAck) -> None:
        await ack()

    async def take_over(body: dict[str, Any], respond: AsyncRespond) -> None:
        user = body["user"]["id"]
        try:
            asked = json.loads(body["actions"][0]["value"])
            env_name, seen = str(asked["env"]), str(asked["lock"])
            seconds = min(int(asked["seconds"]), runtime.config.locks.max_seconds)
            reason = str(asked.get("reason", ""))[:MAX_REASON]
        except (ValueError, KeyError, TypeError):
            return
        if env_name not in runtime.config.environments:
            return
        env = runtime.config.environments[env_name]

        async def answer(text: str) -> None:
            await respond(response_type="ephemeral", replace_original=True, text=text)

        decision = await runtime.policy.can_lock(user, env_name)  # who clicks, checked now
        if not decision:
            await _audit(runtime, user, "lock_takeover", env_name, "refused", decision.reason)
            await answer(f":no_entry: {decision.reason}")
            return
        now = int(time.time())
        current = await runtime.state.get_lock(env_name)
        if current is None or not current.active(now) or current.id != seen:
            await answer(f"{env_name}'s lock changed since you asked (now: "
                         f"{describe(current, now) if current and current.active(now) else 'not locked'})."
                         f" Send `/erp lock {env_name}` again.")
            return
        taken = EnvLock(env_name, user, reason, now, now + seconds)
        if not await runtime.state.take_lock(taken, replacing=current):
            await answer(f"{env_name}'s lock changed just now. Send `/erp lock {env_name}` again.")
            return
        await _audit(runtime, user, "lock_takeover", env_name, "ok",
                     f"from {current.holder} (since {current.since}): {reason}"[:200])
        _show_soon(runtime, env_name, taken)
        await _say(runtime, env.channel, f":lock: <@{user}> took over {env_name}'s lock from <@{current.holder}>"
                                         f"{_reason_text(reason)}. It holds until {slack_time(taken.until)}.")
        await answer(f":lock: {describe(taken, now)}. <@{current.holder}> was told.")

    async def cancel(respond: AsyncRespond) -> None:
        await respond(response_type="ephemeral", replace_original=True, text="Left the lock as it is.")

    app.action(TAKEOVER_ACTION)(ack=ack_click, lazy=[runtime.work.track(take_over)])
    app.action(TAKEOVER_CANCEL_ACTION)(ack=ack_click, lazy=[runtime.work.track(cancel)])
