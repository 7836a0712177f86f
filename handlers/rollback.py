"""`/erp rollback <service> <env> [revision]` and `/erp rollback <env> <revision>`.

First the plan: what will change (current -> target revision and image tags),
posted in the environment's channel with Confirm / Cancel. Only a deployer may
ask; where the environment needs approval, an approver other than the person
who asked must confirm. Then helm (argument lists, a timeout), the rollout
watched through the kubernetes client with the message edited as it moves, and
an audit record of what happened. The "Roll back" button on a failed deploy
card leads here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.aws.state import BOT_ACTOR, AuditRecord
from bot.cluster.helm import HelmError, Revision, service_tags
from bot.cluster.kube import ClusterUnavailable, RolloutState
from bot.cluster.release_diff import changes_besides_the_image
from bot.delivery.command_parser import ErpCommand
from bot.delivery.image_tag import short_tag, split_ref
from bot.runtime import Runtime
from bot.slack.deploy_card_blocks import ROLLBACK_ACTION
from handlers.erp_command import Invocation
from handlers.locks import lock_after_rollback

log = logging.getLogger(__name__)

CONFIRM_ACTION = "rollback_confirm"
CANCEL_ACTION = "rollback_cancel"
PLAN_TTL = 3600  # a plan not confirmed within an hour is stale
NO_CLUSTER = ("No cluster is configured for this bot (no kubeconfig or in-cluster credentials, or no helm), so"
              " I can't read or change releases here.")


class RollbackRefused(Exception):
    """A one-line answer: nothing to roll back to, no such revision, ..."""


class HelmUnreadable(RollbackRefused):
    """helm could not read the release (a timeout, the API server away): worth trying again later."""


@dataclass
class RollbackPlan:
    id: str
    environment: str
    namespace: str
    release: str
    service: str | None  # None: the whole release
    current_revision: int
    target_revision: int
    current_tags: dict[str, str]
    target_tags: dict[str, str]
    requested_by: str
    channel: str = ""
    ts: str = ""
    seen_revision: int = 0  # the release's latest revision (any status) when planned: any newer one makes it stale
    execution_id: str | None = None  # a failed deploy card's plan: made again the same way if stale

    @property
    def what(self) -> str:
        return f"{self.service} in {self.environment}" if self.service else f"{self.release} in {self.environment}"

    def changes(self) -> list[str]:
        names = [self.service] if self.service else sorted(set(self.current_tags) | set(self.target_tags))
        lines = []
        for name in names:
            cur, tgt = self.current_tags.get(name, "?"), self.target_tags.get(name, "?")
            mark = ":leftwards_arrow_with_hook:" if cur != tgt else "="
            lines.append(f"{mark} *{name}*: `{short_tag(cur)}` -> `{short_tag(tgt)}`" if cur != tgt
                         else f"{mark} {name}: `{short_tag(cur)}` unchanged")
        return lines


def _plan_key(plan_id: str) -> tuple[str, str]:
    return f"ROLLBACK#{plan_id}", "PLAN"


def _seal(runtime: Runtime, plan_json: str) -> str:
    """An HMAC of the stored plan: whoever can write the table but not read the bot's secret cannot plant one."""
    return hmac.new(runtime.state_key, plan_json.encode(), hashlib.sha256).hexdigest()


def _deployments(runtime: Runtime, plan: RollbackPlan) -> list[str]:
    names = [plan.service] if plan.service else list(runtime.config.services)
    return [runtime.config.services[n].deployment for n in names if n in runtime.config.services]


async def make_plan(runtime: Runtime, environment: str, service: str | None, revision: int | None,
                    requested_by: str) -> RollbackPlan:
    assert runtime.helm is not None
    env = runtime.config.environments[environment]
    history = await _history(runtime, environment)
    current = _current(history)
    seen = history[-1].number
    numbers = [r.number for r in history]
    if revision is not None and revision not in numbers:
        raise RollbackRefused(f"Revision {revision} is not in `{env.release}`'s history in {environment}"
                              f" (revisions {numbers[0]}-{numbers[-1]}). See `/erp history {environment}`.")
    if revision == current.number:
        raise RollbackRefused(f"Revision {revision} is what {environment} runs now: nothing to roll back.")
    current_tags = service_tags(await runtime.helm.values(env.release, env.namespace, current.number))
    if service is None:
        assert revision is not None
        target_tags = service_tags(await runtime.helm.values(env.release, env.namespace, revision))
        return RollbackPlan(uuid.uuid4().hex[:12], environment, env.namespace, env.release, None, current.number,
                            revision, current_tags, target_tags, requested_by, seen_revision=seen)
    target: Revision | None = None
    target_tag = None
    candidates = [r for r in history if r.number == revision] if revision else \
        [r for r in reversed(history) if r.number < current.number]
    for r in candidates:
        tag = service_tags(await runtime.helm.values(env.release, env.namespace, r.number)).get(service)
        if tag and (revision is not None or tag != current_tags.get(service)):
            target, target_tag = r, tag
            break
    if target is None or target_tag is None:
        raise RollbackRefused(f"Nothing to roll back to: every revision of `{env.release}` in {environment} runs"
                              f" {service} `{short_tag(current_tags.get(service, '?'))}`.")
    if target_tag == current_tags.get(service):
        raise RollbackRefused(f"{service} in {environment} already runs `{short_tag(target_tag)}`"
                              f" (revision {target.number}).")
    return RollbackPlan(uuid.uuid4().hex[:12], environment, env.namespace, env.release, service, current.number,
                        target.number, {service: current_tags.get(service, "?")}, {service: target_tag},
                        requested_by, seen_revision=seen)


async def _history(runtime: Runtime, environment: str) -> list[Revision]:
    assert runtime.helm is not None
    env = runtime.config.environments[environment]
    try:
        history = await runtime.helm.history(env.release, env.namespace)
    except HelmError as e:
        raise HelmUnreadable(f"helm could not read the release `{env.release}` in `{env.namespace}`: {e}") from None
    if not history:
        raise RollbackRefused(f"There is no release `{env.release}` in `{env.namespace}` to roll back.")
    return history


def _current(history: list[Revision]) -> Revision:
    """What runs: the last `deployed` revision (a failed upgrade leaves the one before it running)."""
    return ([r for r in history if r.status == "deployed"] or history)[-1]


async def plan_for_execution(runtime: Runtime, environment: str, service: str | None, execution_id: str,
                             requested_by: str) -> RollbackPlan:
    """The "Roll back" button of a deploy card whose Deploy failed: back to what ran before that execution.

    Read from helm's history, never from the card: the pipeline's deploy writes the execution on the
    revision it makes (`revision_description`). The target is the last revision before it that ran
    (deployed or superseded), never a failed or pending one. Refused when helm is still at work (pending),
    when the execution made no revision and the release is cleanly deployed (nothing reached the cluster),
    when the buildspec's automatic rollback already put back what ran before, or when someone changed the
    release since (then the person chooses). When helm's last change failed midway (its revision `failed`,
    which also loses the description), what runs is unknown: the plan is a whole-release `helm rollback`,
    which re-applies the target revision completely.
    """
    assert runtime.helm is not None
    env = runtime.config.environments[environment]
    history = await _history(runtime, environment)
    short, latest = execution_id[:8], history[-1]
    if latest.status.startswith("pending-"):
        raise RollbackRefused(f"`{env.release}` in {environment} is `{latest.status}` (revision {latest.number}):"
                              f" helm is still at work or was stopped mid-way. See `/erp status {environment}`.")
    mine = [r for r in history if r.made_by(execution_id)]
    if not mine and latest.status != "failed":
        raise RollbackRefused(f"Execution `{short}` changed nothing in {environment}: no revision of `{env.release}`"
                              " came from it, so there is nothing to roll back.")
    first = mine[0].number if mine else latest.number
    before = [r for r in history if r.number < first and r.status in ("deployed", "superseded")]
    if not before:
        raise RollbackRefused(f"Nothing ran in {environment} before execution `{short}`: there is no earlier"
                              f" revision of `{env.release}` to go back to.")
    target = before[-1]
    last_mine = mine[-1].number if mine else latest.number

    def automatic(r: Revision) -> bool:  # the buildspec's own rollback, right after its upgrade, to the target
        return r.number == last_mine + 1 and (r.description == f"Rollback to {target.number}"
                                              or (r.status == "failed" and r.description.startswith("Rollback ")))
    later = [r for r in history if r.number > last_mine and not automatic(r)]
    if later:
        raise RollbackRefused(f"`{env.release}` in {environment} changed after execution `{short}` (revision"
                              f" {later[-1].number}), so going back to before it would undo that too. Choose"
                              f" what to go back to: `/erp history {environment}`, then `/erp rollback"
                              f" {service + ' ' if service in runtime.config.services else ''}{environment}"
                              f" <revision>`.")
    target_tags = service_tags(await runtime.helm.values(env.release, env.namespace, target.number))
    current_tags = service_tags(await runtime.helm.values(env.release, env.namespace, latest.number))
    if latest.status == "failed":  # a failed upgrade or rollback: re-apply the target as a whole
        return RollbackPlan(uuid.uuid4().hex[:12], environment, env.namespace, env.release, None, latest.number,
                            target.number, current_tags, target_tags, requested_by, seen_revision=latest.number,
                            execution_id=execution_id)
    if service in runtime.config.services:
        names = [service]
    else:  # "changed" or "all": the services whose tags the execution changed
        made = service_tags(await runtime.helm.values(env.release, env.namespace, last_mine))
        names = sorted(n for n in set(made) | set(target_tags) if made.get(n) != target_tags.get(n))
    if all(current_tags.get(n) == target_tags.get(n) for n in names):
        back = ", ".join(f"{n} `{short_tag(target_tags.get(n, '?'))}`" for n in names) or "what ran before"
        raise RollbackRefused(f"The automatic rollback already put back {back} in {environment} (revision"
                              f" {latest.number}): nothing to roll back.")
    if service in runtime.config.services:
        return RollbackPlan(uuid.uuid4().hex[:12], environment, env.namespace, env.release, service, latest.number,
                            target.number, {service: current_tags.get(service, "?")},
                            {service: target_tags.get(service, "?")}, requested_by, seen_revision=latest.number,
                            execution_id=execution_id)
    return RollbackPlan(uuid.uuid4().hex[:12], environment, env.namespace, env.release, None, latest.number,
                        target.number, current_tags, target_tags, requested_by, seen_revision=latest.number,
                        execution_id=execution_id)


async def check_only_the_image_changes(runtime: Runtime, plan: RollbackPlan) -> None:
    """A per-service rollback renders the bot's copy of the chart: refuse it if that would change anything
    but the service's image (see bot/cluster/release_diff.py); a whole-release rollback is offered instead."""
    assert runtime.helm is not None and plan.service is not None
    deployment = runtime.config.services[plan.service].deployment
    try:
        current = await runtime.helm.manifest(plan.release, plan.namespace, plan.current_revision)
        planned = await runtime.helm.planned_service_tag(plan.release, plan.namespace, runtime.erp_chart,
                                                         plan.service, plan.target_tags[plan.service])
    except HelmError as e:
        raise HelmUnreadable(f"helm could not render the rollback of {plan.what}: {e}") from None
    others = changes_besides_the_image(current, planned, deployment)
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        raise RollbackRefused(
            f"Rolling back {plan.service} alone would also change {shown}: the chart in this bot differs from"
            f" the one `{plan.release}` was deployed with. Roll back the whole release instead:"
            f" `/erp rollback {plan.environment} {plan.target_revision}`.")


async def still_current(runtime: Runtime, plan: RollbackPlan) -> str | None:
    """None if the release is as the plan saw it; else what changed since (a plan can wait an hour)."""
    history = await _history(runtime, plan.environment)
    latest = history[-1]
    if latest.status.startswith("pending-"):
        return f"`{plan.release}` is `{latest.status}` (revision {latest.number})"
    seen = plan.seen_revision or _current(history).number
    if latest.number != seen:
        return f"`{plan.release}` in {plan.environment} is at revision {latest.number}, not {seen},"
    return None


def plan_blocks(plan: RollbackPlan, runtime: Runtime, status: str, *, buttons: bool) -> list[dict[str, Any]]:
    env = runtime.config.environments[plan.environment]
    who = "an approver" if env.approval else "the requester or a deployer"
    head = (f"*Revision {plan.current_revision} -> {plan.target_revision}*"
            + (" (a new revision with the old image)" if plan.service else " (helm rollback)"))
    blocks: list[Any] = [
        HeaderBlock(text=f":leftwards_arrow_with_hook: Roll back {plan.what}"[:150]),
        SectionBlock(text=MarkdownTextObject(text=head + "\n" + "\n".join(plan.changes()))),
        SectionBlock(text=MarkdownTextObject(text=status)),
    ]
    if buttons:
        blocks.append(ActionsBlock(elements=[
            ButtonElement(text="Confirm rollback", action_id=CONFIRM_ACTION, value=plan.id, style="danger",
                          confirm=ConfirmObject(title="Roll back now?", text=f"{plan.what}: revision"
                                                f" {plan.current_revision} -> {plan.target_revision}.",
                                                confirm="Roll back", deny="Not yet")),
            ButtonElement(text="Cancel", action_id=CANCEL_ACTION, value=plan.id)]))
    footer = (f"asked by <@{plan.requested_by}> · confirm: {who}" if plan.requested_by != BOT_ACTOR else
              f"rolled back by erp-chatops on an alarm ({plan.environment}'s `rollback_on_alarm`): nobody confirms")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=footer)]))
    return [b.to_dict() for b in blocks]


async def propose(runtime: Runtime, environment: str, service: str | None, revision: int | None,
                  user: str, execution_id: str | None = None) -> str:
    """Post the plan in the environment's channel; returns a one-line answer for the person who asked.
    With `execution_id` (a failed deploy card's button) the plan goes back to what ran before it."""
    if runtime.helm is None or runtime.cluster is None:
        return NO_CLUSTER
    decision = await runtime.policy.can_rollback(user, environment)
    if not decision:
        await runtime.state.record_audit(AuditRecord(actor=user, action="rollback", environment=environment,
                                                     service=service, outcome="refused", detail=decision.reason))
        return f":no_entry: {decision.reason}"
    try:
        if execution_id is not None:
            plan = await plan_for_execution(runtime, environment, service, execution_id, user)
        else:
            plan = await make_plan(runtime, environment, service, revision, user)
        if plan.service:
            await check_only_the_image_changes(runtime, plan)
    except RollbackRefused as e:
        return str(e)
    except HelmError as e:
        where = runtime.config.environments[environment]
        return f"helm could not read the release `{where.release}` in `{where.namespace}`: {e}"
    env = runtime.config.environments[environment]
    waiting = ("Waiting for an approver to confirm." if env.approval else "Confirm to roll back, or cancel.")
    posted = await runtime.slack.chat_postMessage(
        channel=env.channel, text=f"Roll back {plan.what}? (revision {plan.current_revision} ->"
                                  f" {plan.target_revision})", blocks=plan_blocks(plan, runtime, waiting, buttons=True))
    plan.channel, plan.ts = env.channel, str(posted["ts"])
    stored = json.dumps(asdict(plan), sort_keys=True)
    await runtime.state.put_marker(*_plan_key(plan.id), PLAN_TTL, only_if_absent=False, status="pending",
                                   plan=stored, seal=_seal(runtime, stored))
    return f"The rollback plan for {plan.what} is in <#{env.channel}>: " + \
        ("an approver must confirm it." if env.approval else "confirm it there.")


async def rollback(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    assert command.environment is not None
    answer = await propose(runtime, command.environment, command.service, command.revision, who.user_id)
    await respond(response_type="ephemeral", replace_original=True, text=answer)


async def _tell(runtime: Runtime, channel: str, user: str, text: str) -> None:
    try:
        await runtime.slack.chat_postEphemeral(channel=channel, user=user, text=text)
    except SlackApiError as e:
        log.warning("could not answer %s: %s", user, e.response.get("error"))


def _progress_line(states: dict[str, RolloutState]) -> str:
    parts = []
    for s in states.values():
        icon = {"complete": ":large_green_circle:", "failed": ":red_circle:"}.get(s.state, ":large_yellow_circle:")
        parts.append(f"{icon} {s.name} `{short_tag(s.image_tag)}` {s.ready}/{s.desired} {s.state}"
                     + (f" ({s.reason})" if s.reason and s.state != "complete" else ""))
    return "\n".join(parts) or "no deployments found"


async def execute(runtime: Runtime, plan: RollbackPlan, confirmed_by: str, by: str | None = None,
                  helm_done: bool = False) -> None:
    """Run the plan (unless `helm_done`: a replica that died after helm ran, its rollout still to follow),
    follow the rollout, audit and record it; the plan's message says each step."""
    assert runtime.helm is not None and runtime.cluster is not None
    by = by or f"confirmed by <@{confirmed_by}>"

    async def show(status: str) -> None:
        # a card Slack will not edit is stale, never a reason to stop a rollback half way or leave it unaudited
        try:
            await runtime.slack.chat_update(channel=plan.channel, ts=plan.ts, text=f"Rollback of {plan.what}: {status}",
                                            blocks=plan_blocks(plan, runtime, status, buttons=False))
        except Exception as e:
            why = e.response.get("error") if isinstance(e, SlackApiError) else type(e).__name__
            log.warning("could not edit the rollback plan of %s: %s", plan.what, why)

    async def audit(outcome: str, detail: str) -> None:
        await runtime.state.record_audit(AuditRecord(actor=confirmed_by, action="rollback",
                                                     environment=plan.environment, service=plan.service,
                                                     outcome=outcome, detail=detail))

    started = time.monotonic()
    if not helm_done:
        await show(f":hourglass_flowing_sand: Rolling back ({by})...")
    try:
        if not helm_done and plan.service:
            try:
                await check_only_the_image_changes(runtime, plan)  # the replica confirming may carry another chart
            except RollbackRefused as e:
                await show(f":no_entry: *Not rolled back* ({by}): {e}")
                await audit("refused", str(e)[:200])
                return
            await runtime.helm.set_service_tag(plan.release, plan.namespace, runtime.erp_chart, plan.service,
                                               plan.target_tags[plan.service])
        elif not helm_done:
            await runtime.helm.rollback(plan.release, plan.namespace, plan.target_revision)
    except HelmError as e:
        await show(f":red_circle: *helm failed*, nothing was rolled back ({by}). Details in the thread.")
        advice = ""
        with contextlib.suppress(HelmError):
            stuck = await runtime.helm.stuck(plan.release, plan.namespace)
            if stuck is not None:  # helm was stopped mid-way: nothing more can change the release until fixed
                advice = (f"\nThe release is left `{stuck.status}` (revision {stuck.number}): no deploy or rollback"
                          f" can run until it is cleared. Check the Deployments, then run `helm rollback"
                          f" {plan.release} {max(1, stuck.number - 1)} -n {plan.namespace}`, and try again.")
        await audit("failed", f"helm: {str(e)[:200]}")
        with contextlib.suppress(Exception):  # the card already says helm failed; this is the detail
            await runtime.slack.chat_postMessage(channel=plan.channel, thread_ts=plan.ts,
                                                 text=f"helm said:\n```{e}```{advice}")
        return

    helm_ran_at = int(time.time())

    async def progress(states: dict[str, RolloutState]) -> None:
        await show(f":hourglass_flowing_sand: helm done, rolling out ({by})\n{_progress_line(states)}")

    try:
        states = await runtime.cluster.wait_rollout(plan.namespace, _deployments(runtime, plan),
                                                    runtime.rollout_timeout, progress)
    except ClusterUnavailable as e:
        await audit("failed", f"rollout not watched: {e}")
        await show(f":warning: helm rolled back, but I can't watch the rollout: {e} ({by}).")
        return
    took = f"{time.monotonic() - started:.0f}s"
    if all(s.state == "complete" for s in states.values()):
        # the audit first: a replica dying after the card says "Rolled back" must not leave it unaccounted for
        await audit("ok", f"revision {plan.current_revision} -> {plan.target_revision}")
        changed = {name: tag for name, tag in plan.target_tags.items()
                   if (plan.service is None or name == plan.service) and plan.current_tags.get(name) != tag}
        try:  # the records `/erp promote` reads: this service's latest change here is a rollback
            await runtime.state.record_rollback(plan.environment, changed,
                                                f"revision {plan.current_revision} -> {plan.target_revision}",
                                                at=helm_ran_at)
        except Exception as e:
            log.warning("could not record the rollback of %s: %s", plan.what, type(e).__name__)
        await show(f":large_green_circle: *Rolled back* in {took} ({by})\n{_progress_line(states)}")
        try:  # the environment's `lock_after_rollback`: nobody redeploys the bad version straight away
            # (a person's rollback: the bot holds no lock, its rollback is the on-call's to follow up)
            locked = await lock_after_rollback(runtime, plan.environment, confirmed_by, plan.what) \
                if confirmed_by != BOT_ACTOR else None
            if locked:
                await runtime.slack.chat_postMessage(channel=plan.channel, thread_ts=plan.ts, text=locked)
        except Exception as e:  # the rollback is done whatever happens here; the plan must still end
            log.warning("could not lock %s after the rollback: %s", plan.environment, type(e).__name__)
    elif any(s.state == "failed" for s in states.values()):
        await audit("failed", "rollout failed")
        await show(f":red_circle: *The rollout failed* after {took} ({by})\n{_progress_line(states)}")
    else:
        await audit("failed", "rollout timed out")
        await show(f":warning: *The rollout did not finish* within {runtime.rollout_timeout:.0f}s ({by})\n"
                   f"{_progress_line(states)}")


def register(app: AsyncApp, runtime: Runtime) -> None:
    async def ack_click(ack: AsyncAck) -> None:
        await ack()

    async def load(plan_id: str) -> tuple[RollbackPlan, str] | None:
        marker = await runtime.state.get_marker(*_plan_key(plan_id))
        if marker is None:
            return None
        if not hmac.compare_digest(str(marker.get("seal", "")).encode(), _seal(runtime, str(marker["plan"])).encode()):
            log.warning("rollback plan %s is not one this bot stored (its seal does not match): refused", plan_id)
            return None
        plan = RollbackPlan(**json.loads(marker["plan"]))
        # stored state decides nothing: where it runs comes from the config, what it sets must be a tag
        env = runtime.config.environments.get(plan.environment)
        if env is None or (plan.service is not None and plan.service not in runtime.config.services) or \
                not all(split_ref(str(t)) for t in plan.target_tags.values()):
            log.warning("rollback plan %s does not match the config: refused", plan_id)
            return None
        plan.namespace, plan.release, plan.channel = env.namespace, env.release, env.channel
        return plan, str(marker["status"])

    async def confirm(body: dict[str, Any]) -> None:
        user, channel = body["user"]["id"], body.get("channel", {}).get("id", "")
        loaded = await load(body["actions"][0]["value"])
        if loaded is None:
            await _tell(runtime, channel, user, "This rollback plan has expired or is not one I made: nothing"
                                                " was done. Ask again with `/erp rollback`.")
            return
        plan, status = loaded
        if status != "pending":
            await _tell(runtime, channel, user, f"This rollback is already {status}.")
            return
        env = runtime.config.environments[plan.environment]
        if env.approval:  # a second person, who may approve, never the one who asked
            decision = await runtime.policy.can_approve(user, plan.environment, plan.requested_by)
        else:
            decision = await runtime.policy.can_rollback(user, plan.environment)
        if not decision:
            reason = decision.reason.replace("You asked for this deploy", "You asked for this rollback")
            await runtime.state.record_audit(AuditRecord(actor=user, action="rollback", environment=plan.environment,
                                                         service=plan.service, outcome="refused", detail=reason))
            await _tell(runtime, channel, user, f":no_entry: {reason}")
            return
        if not await runtime.state.transition(*_plan_key(plan.id), "pending", "running", confirmed_by=user):
            await _tell(runtime, channel, user, "Someone else has just confirmed or cancelled this rollback.")
            return
        try:
            changed = await still_current(runtime, plan)
        except RollbackRefused as e:
            changed = str(e)
        if changed is not None:  # the plan may be an hour old: never run it against a release that moved on
            await runtime.state.transition(*_plan_key(plan.id), "running", "stale")
            await runtime.slack.chat_update(channel=plan.channel, ts=plan.ts, text=f"Rollback of {plan.what}: stale",
                                            blocks=plan_blocks(plan, runtime, f":warning: *Not rolled back*: {changed}"
                                                               " since this plan was made.", buttons=False))
            # made again the same way: a card's plan from helm's history, a command's to the same target revision
            fresh = await propose(runtime, plan.environment, plan.service, plan.target_revision, plan.requested_by,
                                  execution_id=plan.execution_id)
            await _tell(runtime, channel, user, f"Nothing was done: {changed} since this plan was made. {fresh}")
            return
        await execute(runtime, plan, user)
        await runtime.state.transition(*_plan_key(plan.id), "running", "done")

    async def cancel(body: dict[str, Any]) -> None:
        user, channel = body["user"]["id"], body.get("channel", {}).get("id", "")
        loaded = await load(body["actions"][0]["value"])
        if loaded is None or loaded[1] != "pending":
            await _tell(runtime, channel, user, "This rollback can no longer be cancelled.")
            return
        plan = loaded[0]
        allowed = user == plan.requested_by or await runtime.policy.can_rollback(user, plan.environment)
        if not allowed:
            await _tell(runtime, channel, user, "Only the person who asked or a deployer can cancel this rollback.")
            return
        if await runtime.state.transition(*_plan_key(plan.id), "pending", "cancelled"):
            await runtime.slack.chat_update(channel=plan.channel, ts=plan.ts, text="Rollback cancelled",
                                            blocks=plan_blocks(plan, runtime, f"Cancelled by <@{user}>.",
                                                               buttons=False))

    async def from_card(body: dict[str, Any]) -> None:
        """The "Roll back" button on a failed deploy card."""
        service, env, execution_id = [*str(body["actions"][0].get("value", "")).split(" "), "", "", ""][:3]
        user, channel = body["user"]["id"], body.get("channel", {}).get("id", "")
        if env not in runtime.config.environments or not execution_id or \
                (service not in runtime.config.services and service not in ("changed", "all")):
            await _tell(runtime, channel, user, "I can't tell what this card's deploy changed. Choose what to roll"
                                                " back with `/erp history <env>` and `/erp rollback`.")
            return
        await _tell(runtime, channel, user, await propose(runtime, env, service if service in runtime.config.services
                                                          else None, None, user, execution_id=execution_id))

    app.action(CONFIRM_ACTION)(ack=ack_click, lazy=[runtime.work.track(confirm)])
    app.action(CANCEL_ACTION)(ack=ack_click, lazy=[runtime.work.track(cancel)])
    app.action(ROLLBACK_ACTION)(ack=ack_click, lazy=[runtime.work.track(from_card)])
