"""A service's error alarm, where its deploy is.

"CloudWatch Alarm State Change" events of `erp-<env>-<service>-errors` (the Terraform module's alarms)
arrive on the events queue. An ALARM within `alarms.window` of the last deploy of that service to that
environment is answered in that deploy card's thread, broadcast to the channel: which alarm, how long
after the deploy, the metric's value, and *Logs* (what `/erp logs <service> <env> 30m` shows), *Roll back*
(the plan for exactly that deploy) and *Lock <env>*. Otherwise it goes to the on-call channel with *Logs*
and the service's last three deploys. Back to OK, the same message says resolved, and after how long. One
message per alarm and deploy: a flapping alarm edits it, never posts again. Where the environment has
`rollback_on_alarm`, an alarm within the window also rolls that deploy back (handlers/alarm_rollback.py).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any, cast

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock

from bot.delivery.command_parser import ErpCommand, parse_since
from bot.delivery.escaping import escape_text
from bot.delivery.freeze_calendar import in_words
from bot.delivery.image_tag import short_tag
from bot.delivery.pipeline_events import PipelineEvent, alarm_name
from bot.runtime import Runtime
from bot.slack.deploy_card_blocks import ROLLBACK_ACTION
from handlers import alarm_rollback, locks
from handlers.erp_command import AnswerBeside, Invocation
from handlers.logs import logs

log = logging.getLogger(__name__)

LOGS_ACTION = "alarm_logs"
LOCK_ACTION = "alarm_lock"
MARKER_TTL = 7 * 86400
POSTING_GRACE = timedelta(seconds=60)  # a claim this old without a message: its replica died, take it over
SKEW = timedelta(seconds=60)  # AWS's clocks and ours differ a little
LATEST = "LATEST"  # the alarm's newest state change seen, by its time


class PostingElsewhere(Exception):
    """Another replica is posting this alarm's message right now: the event comes back later (SQS)."""


def _owner(runtime: Runtime, name: str) -> tuple[str, str] | None:
    for env in runtime.config.environments:
        for service in runtime.config.services:
            if alarm_name(env, service) == name:
                return env, service
    return None


def _value(detail: dict[str, Any]) -> str:
    """`7 errors (threshold 5)` from the state's reasonData (CloudWatch's JSON), or its reason's first part."""
    state = detail.get("state") or {}
    try:
        data = json.loads(state.get("reasonData") or "{}")
        points = data.get("recentDatapoints") or []
        if points:
            return f"{points[-1]:g} errors a minute (threshold {data.get('threshold', '?'):g})"
    except (ValueError, TypeError, AttributeError):
        pass
    return escape_text(str(state.get("reason", ""))[:200])


def _blocks(text: str, buttons: list[ButtonElement]) -> list[dict[str, Any]]:
    blocks: list[Any] = [SectionBlock(text=text[:2900])]
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    return [b.to_dict() for b in blocks]


async def handle_alarm(event: PipelineEvent, runtime: Runtime) -> None:
    name = str(event.detail.get("alarmName", ""))
    owner = _owner(runtime, name)
    if owner is None:
        return
    env, service = owner
    at = event.time.isoformat()
    # SQS does not keep order: the newest state change wins, an older one is ignored (OKs are kept too)
    latest = await runtime.state.get_marker(f"ALARM#{name}", LATEST)
    if latest is not None and str(latest.get("at", "")) > at:
        return
    await runtime.state.put_marker(f"ALARM#{name}", LATEST, MARKER_TTL, only_if_absent=False, at=at,
                                   value=event.state)
    if event.state == "OK":  # whatever deploy it was posted under (a fix may have been deployed since)
        for posted in await runtime.state.markers(f"ALARM#{name}"):
            if posted.get("ts") and posted.get("firing") and str(posted["sk"]) != LATEST:
                since = datetime.fromisoformat(str(posted.get("since")))
                await _edit(runtime, posted, f":white_check_mark: *{name}* is back to OK: resolved after"
                                             f" {in_words(event.time - since)}.", firing=False)
                await _save(runtime, (f"ALARM#{name}", str(posted["sk"])), {**posted, "firing": False})
        return
    if event.state != "ALARM":
        return  # INSUFFICIENT_DATA says nothing about errors
    deployed = (await runtime.state.deploy_records(env)).get(service, {}).get("deployed") or {}
    key = (f"ALARM#{name}", str(deployed.get("execution") or "-"))  # one message per alarm and deploy
    marker = await runtime.state.get_marker(*key)
    gap = _after_deploy(runtime, event, deployed)
    if marker is None or (not marker.get("ts") and _stale(marker)):
        await _first_message(runtime, event, env, service, deployed, gap, key, marker)
    elif not marker.get("ts"):
        raise PostingElsewhere(name)
    elif not marker.get("firing"):
        count = int(marker.get("count", 1)) + 1
        if await _edit(runtime, marker, f":rotating_light: *{name}* is in ALARM again ({count} times since the"
                                        f" deploy): {_value(event.detail)}.", firing=True):
            await _save(runtime, key, {**marker, "firing": True, "count": count, "since": at})
        else:  # the message was deleted: say it afresh
            await runtime.state.delete_marker(*key)
            await _first_message(runtime, event, env, service, deployed, gap, key, None)
    if gap is not None and runtime.config.environments[env].rollback_on_alarm:
        # the deploy's own thread, as the message: the rollback is announced where the deploy is
        card = await runtime.state.get_card(str(deployed["execution"]))
        if card is not None and card.get("ts"):
            await alarm_rollback.request(runtime, name, env, service, str(deployed["execution"]),
                                         str(card["channel"]), str(card["ts"]))


def _after_deploy(runtime: Runtime, event: PipelineEvent, deployed: dict[str, Any]) -> timedelta | None:
    """How long after the last deploy the alarm fired, if within `alarms.window` of it (a minute of clock
    skew allowed); None otherwise: an alarm older than the deploy is not that deploy's doing."""
    if not deployed.get("at") or not deployed.get("execution"):
        return None
    gap = event.time - datetime.fromtimestamp(int(deployed["at"]), event.time.tzinfo)
    return gap if -SKEW <= gap <= timedelta(seconds=runtime.config.alarm_window_seconds) else None


async def _save(runtime: Runtime, key: tuple[str, str], fields: dict[str, Any]) -> None:
    kept = {k: v for k, v in fields.items() if k not in ("pk", "sk", "ttl")}
    await runtime.state.put_marker(*key, MARKER_TTL, only_if_absent=False, **kept)


def _stale(marker: dict[str, Any]) -> bool:
    """A claim without a message, older than the grace by the wall clock: its replica died."""
    claimed = float(marker.get("claimed_at", 0))
    return time.time() - claimed > POSTING_GRACE.total_seconds()


async def _first_message(runtime: Runtime, event: PipelineEvent, env: str, service: str, deployed: dict[str, Any],
                         gap: timedelta | None, key: tuple[str, str], marker: dict[str, Any] | None) -> None:
    name = str(event.detail.get("alarmName"))
    claim: dict[str, Any] = {"claimed_at": int(time.time()), "since": event.time.isoformat(), "firing": True,
                             "count": 1}
    if marker is not None:  # a dead replica's claim: removed only if still the one read, then claimed afresh
        if not await runtime.state.delete_marker_if(*key, "claimed_at", marker.get("claimed_at", 0)):
            raise PostingElsewhere(name)
    if not await runtime.state.put_marker(*key, MARKER_TTL, **claim):
        raise PostingElsewhere(name)  # another replica claimed it a moment ago
    window = timedelta(seconds=runtime.config.alarm_window_seconds)
    card = await runtime.state.get_card(str(deployed.get("execution"))) if gap is not None else None
    logs_button = ButtonElement(text="Logs", action_id=LOGS_ACTION, value=f"{service} {env}")
    try:
        if card is not None and card.get("ts"):
            tag = short_tag(str(deployed.get("image") or deployed.get("commit") or "?"))
            after = in_words(gap) if gap is not None else "?"
            text = (f":rotating_light: *{name}* went to ALARM {after} after the deploy of {service} `{tag}` to"
                    f" {env}: {_value(event.detail)}.")
            buttons = [logs_button,
                       ButtonElement(text="Roll back", action_id=ROLLBACK_ACTION, style="danger",
                                     value=f"{service} {env} {deployed.get('execution')}"),
                       ButtonElement(text=f"Lock {env}", action_id=LOCK_ACTION, value=f"{env} {name}")]
            posted = await runtime.slack.chat_postMessage(
                channel=str(card["channel"]), thread_ts=str(card["ts"]), reply_broadcast=True, text=text,
                blocks=_blocks(text, buttons))
        else:
            recent = [r for r in await runtime.state.list_audit([env], service, limit=30)
                      if r.action in ("deploy", "promote") and r.outcome == "started"][:3]
            history = "\n".join(f"• {r.who} {r.action}ed {r.service} {r.at[:16]}" for r in recent) or \
                "• no deploys recorded"
            text = (f":rotating_light: *{name}* went to ALARM: {_value(event.detail)}. No deploy of {service} to"
                    f" {env} in the last {in_words(window)}. Its last deploys:\n{history}")
            channel = (runtime.config.oncall_channels or (runtime.config.environments[env].channel,))[0]
            posted = await runtime.slack.chat_postMessage(channel=channel, text=text,
                                                          blocks=_blocks(text, [logs_button]))
    except Exception:
        await runtime.state.delete_marker(*key)  # nothing posted: the event comes back and tries again
        raise
    await _save(runtime, key, {**claim, "ts": str(posted["ts"]), "channel": str(posted["channel"]), "text": text,
                               "logs": f"{service} {env}"})


async def _edit(runtime: Runtime, marker: dict[str, Any], status: str, firing: bool) -> bool:
    """The one message, edited: its first text (what and where) stays, the latest state is added; while it
    fires, Logs stays (Roll back and Lock were on the first message, and the plan or lock they made stands).
    False if the message is gone (someone deleted it)."""
    text = f"{marker.get('text', '')}\n{status}"
    buttons = [ButtonElement(text="Logs", action_id=LOGS_ACTION, value=str(marker.get("logs", "")))] \
        if firing and marker.get("logs") else []
    try:
        await runtime.slack.chat_update(channel=str(marker["channel"]), ts=str(marker["ts"]), text=text,
                                        blocks=_blocks(text, buttons))
    except SlackApiError as e:
        if e.response.get("error") in ("message_not_found", "cant_update_message"):
            return False
        raise
    return True


def register(app: AsyncApp, runtime: Runtime) -> None:
    async def ack_click(ack: AsyncAck) -> None:
        await ack()

    async def show_logs(body: dict[str, Any], respond: AsyncRespond) -> None:
        service, _, env = str(body["actions"][0].get("value", "")).partition(" ")
        if service not in runtime.config.services or env not in runtime.config.environments:
            return
        # exactly `/erp logs <service> <env> 30m`, as the clicker (their read access is checked there)
        command = ErpCommand(verb="logs", service=service, environment=env, since=parse_since("30m"))
        await logs(command, Invocation.from_click(body), runtime, cast(AsyncRespond, AnswerBeside(respond)))

    async def lock_env(body: dict[str, Any], respond: AsyncRespond) -> None:
        env, _, name = str(body["actions"][0].get("value", "")).partition(" ")
        if env not in runtime.config.environments:
            return
        command = ErpCommand(verb="lock", environment=env, reason=f"{name[:80]} in ALARM")
        await locks.lock(command, Invocation.from_click(body), runtime, cast(AsyncRespond, AnswerBeside(respond)))

    app.action(LOGS_ACTION)(ack=ack_click, lazy=[runtime.work.track(show_logs)])
    app.action(LOCK_ACTION)(ack=ack_click, lazy=[runtime.work.track(lock_env)])
