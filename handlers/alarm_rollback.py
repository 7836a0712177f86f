"""The automatic rollback an alarm asks for, where the environment has `rollback_on_alarm`.

An ALARM within `alarms.window` of a deploy (handlers/alarms.py) asks for it: one request per deploy,
whichever alarm, event copy or replica comes first. It runs beside the event consumer (a rollout takes
minutes; the queue must not wait), as the plan the deploy card's Roll back makes (back to what ran before
that execution, from helm's history), announced and followed in the card's thread, audited as erp-chatops.

Nothing is lost when a replica dies: the request is a row in the state table whose runner renews a lease;
every replica's sweep runs requests nobody holds (a due one, or one whose lease ran out). The plan is
saved, sealed, before helm runs, so a replica taking over knows whether helm already ran it (the release
at the plan's next revision with the plan's tags): then it only follows the rollout and records it; if
helm never ran, it runs the plan; if the release moved on otherwise, it says so and stops. A helm that
cannot be read is tried again by the sweep; a plan helm's history refuses is said once in the thread.

States: due -> running (lease) -> done | refused; running with a lapsed lease -> running (taken over).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import Any

from bot.aws.clients import error_code
from bot.aws.state import BOT_ACTOR, AuditRecord
from bot.cluster.helm import HelmError, service_tags
from bot.runtime import Runtime
from handlers.rollback import (
    HelmUnreadable,
    RollbackPlan,
    RollbackRefused,
    _seal,
    check_only_the_image_changes,
    execute,
    plan_blocks,
    plan_for_execution,
)

log = logging.getLogger(__name__)

REQUESTS = "AUTOROLLBACK"  # one partition: the sweep reads every open request in one query
TTL = 7 * 86400
FINISHED = ("done", "refused")
MAX_WAIT = 1800  # seconds: a rollback that could not start within this (helm away) is left to people
SEALED = ("sk", "environment", "service", "alarm", "channel", "thread_ts", "requested_at")


def _beat(runtime: Runtime) -> float:
    return max(1.0, runtime.auto_rollback_beat_seconds)  # beats are kept in whole seconds


def _row_seal(runtime: Runtime, row: dict[str, Any]) -> str:
    """Only the bot writes requests: someone who can write the table but not read its secret cannot plant one."""
    return _seal(runtime, "AUTOROLLBACK " + json.dumps({k: str(row.get(k, "")) for k in SEALED}, sort_keys=True))


def _plan_seal(runtime: Runtime, execution_id: str, stored: str) -> str:
    """A saved plan bound to its request: a /erp rollback plan (sealed alike) cannot be replayed here."""
    return _seal(runtime, f"AUTOROLLBACK {execution_id} {stored}")


def _lapsed(item: dict[str, Any], runtime: Runtime) -> bool:
    """A lease not renewed for four beats: its replica died (or lost the table), someone else may take it."""
    return time.time() - float(item.get("beat", 0)) > 4 * _beat(runtime)


async def request(runtime: Runtime, alarm: str, environment: str, service: str, execution_id: str,
                  channel: str, thread_ts: str) -> None:
    """Record the request (once per deploy) and start it here, beside the consumer."""
    row: dict[str, Any] = {"sk": execution_id, "environment": environment, "service": service, "alarm": alarm,
                           "channel": channel, "thread_ts": thread_ts, "requested_at": int(time.time())}
    await runtime.state.put_marker(REQUESTS, execution_id, TTL, status="due", beat=0, row_seal=_row_seal(runtime, row),
                                   **{k: v for k, v in row.items() if k != "sk"})
    runtime.work.spawn(run(runtime, execution_id))


async def sweep(runtime: Runtime) -> None:
    """Start every request nobody is running: due ones (their replica died before starting), lapsed ones."""
    for item in await runtime.state.markers(REQUESTS):
        if item.get("status") == "due" or (item.get("status") == "running" and _lapsed(item, runtime)):
            runtime.work.spawn(run(runtime, str(item["sk"])))


async def sweep_forever(runtime: Runtime) -> None:
    while True:
        try:
            await sweep(runtime)
        except Exception as e:  # the table away: the next round tries again
            log.warning("the automatic rollback sweep failed: %s", error_code(e))
        await asyncio.sleep(max(1.0, _beat(runtime)))


async def run(runtime: Runtime, execution_id: str) -> None:
    item = await runtime.state.get_marker(REQUESTS, execution_id)
    if item is None or item.get("status") in FINISHED:
        return
    if not hmac.compare_digest(str(item.get("row_seal", "")), _row_seal(runtime, item)):
        log.warning("automatic rollback request %s is not one this bot made (its seal does not match): ignored",
                    execution_id)
        await runtime.state.update_marker_if(REQUESTS, execution_id, {"status": item.get("status")}, status="refused")
        return
    me = uuid.uuid4().hex
    if item.get("status") == "due":
        taken = await runtime.state.update_marker_if(REQUESTS, execution_id, {"status": "due"}, status="running",
                                                     holder=me, beat=int(time.time()))
    elif _lapsed(item, runtime):
        taken = await runtime.state.update_marker_if(REQUESTS, execution_id,
                                                     {"status": "running", "holder": item.get("holder", ""),
                                                      "beat": item.get("beat", 0)},
                                                     holder=me, beat=int(time.time()))
    else:
        return  # another replica is at it
    if not taken:
        return
    beating = asyncio.ensure_future(_keep_lease(runtime, execution_id, me))
    try:
        await _roll_back(runtime, {**item, "holder": me}, me)
    except Exception as e:  # the lease lapses and a sweep takes it over; nothing is marked done
        log.warning("the automatic rollback of %s stopped: %s", execution_id, error_code(e))
    finally:
        beating.cancel()


async def _keep_lease(runtime: Runtime, execution_id: str, me: str) -> None:
    while True:
        await asyncio.sleep(_beat(runtime))
        with contextlib.suppress(Exception):  # a missed beat or two is fine; four lose the lease
            if not await runtime.state.update_marker_if(REQUESTS, execution_id, {"holder": me}, beat=int(time.time())):
                return


async def _finish(runtime: Runtime, execution_id: str, me: str, status: str) -> bool:
    return await runtime.state.update_marker_if(REQUESTS, execution_id, {"holder": me, "status": "running"},
                                                status=status)


async def _roll_back(runtime: Runtime, item: dict[str, Any], me: str) -> None:
    execution_id = str(item["sk"])
    env_name, service, alarm = str(item.get("environment")), str(item.get("service")), str(item.get("alarm"))
    channel, thread_ts = str(item.get("channel")), str(item.get("thread_ts"))
    env = runtime.config.environments.get(env_name)
    # stored state decides nothing: the config says, now, whether this environment rolls back on alarm
    if env is None or not env.rollback_on_alarm or service not in runtime.config.services or \
            runtime.helm is None or runtime.cluster is None:
        await _finish(runtime, execution_id, me, "refused")
        return
    why = f"*{alarm}* went to ALARM soon after this deploy, and {env_name} rolls back on alarm"
    plan, helm_done = await _saved_plan(runtime, item, env_name)
    if plan is None:
        waited = time.time() - float(item.get("requested_at", 0))
        try:
            plan = await _plan(runtime, env_name, service, execution_id)
        except (HelmUnreadable, HelmError) as e:
            if waited < MAX_WAIT:  # try again: given back as due, a sweep picks it up a beat later
                log.warning("the automatic rollback of %s waits for helm: %s", execution_id, e)
                await runtime.state.update_marker_if(REQUESTS, execution_id, {"holder": me}, status="due")
                return
            if await _finish(runtime, execution_id, me, "refused"):
                await _say_refused(runtime, channel, thread_ts, execution_id, env_name, service, why,
                                   f"helm could not be read for {int(waited // 60)} minutes ({e}); roll back by hand"
                                   f" if it is still needed: `/erp rollback {service} {env_name}`")
            return
        except RollbackRefused as e:
            if await _finish(runtime, execution_id, me, "refused"):  # said and audited once
                await _say_refused(runtime, channel, thread_ts, execution_id, env_name, service, why, str(e))
            return
        plan.channel = channel
        try:  # announced where the deploy is; Slack away must not hold the rollback back
            posted = await runtime.slack.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=f"Rolling back {plan.what} automatically: {alarm} in ALARM",
                blocks=plan_blocks(plan, runtime, f":hourglass_flowing_sand: Rolling back automatically: {why}.",
                                   buttons=False))
            plan.ts = str(posted["ts"])
        except Exception as e:
            log.warning("the automatic rollback of %s goes on unannounced: %s", execution_id, error_code(e))
        stored = json.dumps(asdict(plan), sort_keys=True)
        if not await runtime.state.update_marker_if(REQUESTS, execution_id, {"holder": me}, plan=stored,
                                                    seal=_plan_seal(runtime, execution_id, stored)):
            return  # the lease was lost meanwhile: whoever holds it now goes on
    elif helm_done is None:  # the release moved on since the plan, other than by it: a person's turn
        await _finish(runtime, execution_id, me, "refused")
        with contextlib.suppress(Exception):
            await runtime.slack.chat_postMessage(channel=channel, thread_ts=thread_ts, text=(
                f":warning: The automatic rollback of {plan.what} stopped: `{plan.release}` changed since it was"
                f" planned (a replica stopped half way). See `/erp status {env_name}` and `/erp history"
                f" {env_name}`."))
        return
    if not await runtime.state.update_marker_if(REQUESTS, execution_id, {"holder": me}, beat=int(time.time())):
        return  # the lease was taken over (this replica lost the table a while): never run helm twice
    await execute(runtime, plan, BOT_ACTOR, by=f"automatically, {alarm} in ALARM", helm_done=bool(helm_done))
    await _finish(runtime, execution_id, me, "done")


async def _plan(runtime: Runtime, env_name: str, service: str, execution_id: str) -> RollbackPlan:
    """What the execution changed goes back (all its services: a deploy of several is undone as one), as a
    per-service plan when it changed only the alarm's service."""
    plan = await plan_for_execution(runtime, env_name, "changed", execution_id, BOT_ACTOR)
    changed = sorted(n for n in plan.target_tags if plan.current_tags.get(n) != plan.target_tags.get(n))
    if plan.service is None and changed == [service]:
        plan = await plan_for_execution(runtime, env_name, service, execution_id, BOT_ACTOR)
    if plan.service:
        await check_only_the_image_changes(runtime, plan)
    return plan


async def _saved_plan(runtime: Runtime, item: dict[str, Any],
                      env_name: str) -> tuple[RollbackPlan | None, bool | None]:
    """The plan a previous holder saved (None if none, or not sealed by this bot), and whether helm ran it:
    False (the release as planned), True (one revision on, with the plan's tags), None (moved on otherwise)."""
    stored = item.get("plan")
    if not stored or not hmac.compare_digest(str(item.get("seal", "")),
                                             _plan_seal(runtime, str(item["sk"]), str(stored))):
        return None, False
    plan = RollbackPlan(**json.loads(str(stored)))
    if plan.environment != env_name or plan.execution_id != item["sk"]:
        return None, False
    env = runtime.config.environments[env_name]
    plan.namespace, plan.release = env.namespace, env.release  # where it runs comes from the config
    assert runtime.helm is not None
    history = await runtime.helm.history(env.release, env.namespace)
    latest = history[-1] if history else None
    if latest is None or latest.number == plan.seen_revision:
        return plan, False
    if latest.number == plan.seen_revision + 1 and latest.status == "deployed":
        tags = service_tags(await runtime.helm.values(env.release, env.namespace, latest.number))
        names = [plan.service] if plan.service else list(plan.target_tags)
        if all(tags.get(n) == plan.target_tags.get(n) for n in names):
            return plan, True
    return plan, None


async def _say_refused(runtime: Runtime, channel: str, thread_ts: str, execution_id: str, env_name: str,
                       service: str, why: str, reason: str) -> None:
    with contextlib.suppress(Exception):
        await runtime.state.record_audit(AuditRecord(actor=BOT_ACTOR, action="rollback", environment=env_name,
                                                     service=service, outcome="refused", detail=reason[:200],
                                                     execution_id=execution_id))
    with contextlib.suppress(Exception):
        await runtime.slack.chat_postMessage(channel=channel, thread_ts=thread_ts,
                                             text=f":warning: Not rolled back automatically ({why}): {reason}")
