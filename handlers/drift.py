"""`/erp drift [env]`, and the periodic drift check.

Compares, per service, the pipeline's record of its last deploy, the Helm release, and the Deployment in
the cluster (bot/delivery/drift.py says what counts). The periodic check (`drift_check: 10m` in the config;
one replica at a time, by a lease in the state table) posts one message per drift in the environment's
channel, edited as it changes or clears, never repeated, with *Show diff* (a file), *Re-deploy via the
pipeline* (handlers/redeploy.py: the recorded version, through the pipeline and its prod approval) and
*Ignore for 24h*.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ConfirmObject, SectionBlock

from bot.aws.clients import error_code
from bot.cluster.helm import HelmError, service_tags
from bot.cluster.kube import ClusterUnavailable
from bot.delivery.command_parser import ErpCommand
from bot.delivery.drift import Drift, cluster_drift, diff_text, manifest_deployments, release_drift
from bot.delivery.escaping import escape_text
from bot.runtime import Runtime
from handlers.erp_command import AnswerBeside, Invocation, over_limit
from handlers.redeploy import redeploy_recorded
from handlers.rollback import NO_CLUSTER

log = logging.getLogger(__name__)

DIFF_ACTION = "drift_diff"
IGNORE_ACTION = "drift_ignore"
REDEPLOY_ACTION = "drift_redeploy"
IGNORE_SECONDS = 86400
MARKER_TTL = 30 * 86400


class CannotCompare(Exception):
    """Helm or the cluster could not be read: a one-line reason."""


async def find_drift(runtime: Runtime, env_name: str) -> list[Drift]:
    assert runtime.helm is not None and runtime.cluster is not None
    env = runtime.config.environments[env_name]
    try:
        history = await runtime.helm.history(env.release, env.namespace, limit=5)
        deployed = [r for r in history if r.status == "deployed"]
        if not deployed:
            return []
        revision = deployed[-1].number
        manifest = manifest_deployments(await runtime.helm.manifest(env.release, env.namespace, revision))
        released = service_tags(await runtime.helm.values(env.release, env.namespace, revision))
        live = await runtime.cluster.deployments(env.namespace)
    except HelmError as e:
        raise CannotCompare(f"helm could not read `{env.release}` in {env_name}: {str(e)[:200]}") from None
    except ClusterUnavailable as e:
        raise CannotCompare(str(e)) from None
    records = await runtime.state.deploy_records(env_name)
    drifts: list[Drift] = []
    for name, service in runtime.config.services.items():
        mine = records.get(name, {})
        # the pipeline's latest word on it: its last deploy, or the bot's rollback since
        latest = max((r for r in (mine.get("deployed"), mine.get("attempt"), mine.get("rolled_back"))
                      if r and (r.get("ok", True) or r.get("rolled_back"))),
                     key=lambda r: int(r.get("at", 0)), default=None)
        drifts += release_drift(name, str(latest.get("image") or "") if latest else None, released.get(name))
        if service.deployment in manifest:
            drifts += cluster_drift(name, manifest[service.deployment], live.get(service.deployment))
    return drifts


async def drift(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    if runtime.helm is None or runtime.cluster is None:
        await respond(response_type="ephemeral", replace_original=True, text=NO_CLUSTER)
        return
    parts = []
    for env_name in [command.environment] if command.environment else list(runtime.config.environments):
        decision = await runtime.policy.can_read(who.user_id, env_name)
        if not decision:
            parts.append(f":no_entry: {env_name}: {decision.reason}")
            continue
        try:
            found = await find_drift(runtime, env_name)
        except CannotCompare as e:
            parts.append(f":warning: {env_name}: {e}")
            continue
        parts.append(f":large_green_circle: *{env_name}*: no drift: the cluster runs what Helm and the pipeline"
                     " deployed." if not found else
                     f":warning: *{env_name}*: {len(found)} drift(s)\n" + "\n".join(f"• {escape_text(d.line())}"
                                                                              for d in found))
    await respond(response_type="ephemeral", replace_original=True, text="\n\n".join(parts))


def _key(env: str, d: Drift) -> tuple[str, str]:
    return f"DRIFT#{env}", f"{d.service}#{d.source}"


def _message(env: str, d: Drift, note: str = "") -> tuple[str, list[dict[str, Any]]]:
    text = f":warning: *Drift in {env}*: {escape_text(d.line())}{note}"
    value = f"{env}|{d.service}|{d.source}"[:1900]
    blocks = [SectionBlock(text=text[:2900]).to_dict(), ActionsBlock(elements=[
        ButtonElement(text="Show diff", action_id=DIFF_ACTION, value=value),
        ButtonElement(text="Re-deploy via the pipeline", action_id=REDEPLOY_ACTION, value=value,
                      confirm=ConfirmObject(title="Re-deploy?", text=f"{d.service} in {env}: the version the pipeline"
                                            " last deployed, through the pipeline (approval where it applies).",
                                            confirm="Re-deploy", deny="Not yet")),
        ButtonElement(text="Ignore for 24h", action_id=IGNORE_ACTION, value=value)]).to_dict()]
    return text, blocks


async def _show(runtime: Runtime, env: str, marker: dict[str, Any] | None, text: str,
                blocks: list[dict[str, Any]]) -> tuple[str, str]:
    """Edit the drift's message, or post one when there is none (or a person deleted it)."""
    if marker is not None and marker.get("ts"):
        try:
            await runtime.slack.chat_update(channel=str(marker["channel"]), ts=str(marker["ts"]), text=text,
                                            blocks=blocks)
            return str(marker["channel"]), str(marker["ts"])
        except SlackApiError as e:
            if e.response.get("error") not in ("message_not_found", "cant_update_message"):
                raise
    posted = await runtime.slack.chat_postMessage(channel=runtime.config.environments[env].channel, text=text,
                                                  blocks=blocks)
    return str(posted["channel"]), str(posted["ts"])


async def check_environment(runtime: Runtime, env_name: str) -> None:
    """One message per drift: posted once it is seen twice in a row (a deploy in progress is not drift: the
    release changes before the pipeline records it), edited when it changes or clears, never repeated."""
    found = {f"{d.service}#{d.source}": d for d in await find_drift(runtime, env_name)}
    known = {str(m["sk"]): m for m in await runtime.state.markers(f"DRIFT#{env_name}")}
    now = int(time.time())
    for sk, d in found.items():
        marker = known.pop(sk, None)
        fields = {k: v for k, v in (marker or {}).items() if k not in ("pk", "sk", "ttl")}
        ignored_until = int(fields.get("ignored_until", 0))
        if ignored_until > now:
            continue
        if marker is None or (not marker.get("ts") and marker.get("fingerprint") != d.fingerprint):
            # seen once: wait for the next check before saying anything
            await runtime.state.put_marker(f"DRIFT#{env_name}", sk, MARKER_TTL, only_if_absent=False,
                                           fingerprint=d.fingerprint)
            continue
        if marker.get("ts") and marker.get("fingerprint") == d.fingerprint and not ignored_until:
            continue  # said already, unchanged
        text, blocks = _message(env_name, d)
        # an ignore that ran out, or a first sighting confirmed: a new message people see; else an edit
        channel, ts = await _show(runtime, env_name, None if ignored_until else marker, text, blocks)
        await runtime.state.put_marker(f"DRIFT#{env_name}", sk, MARKER_TTL, only_if_absent=False,
                                       fingerprint=d.fingerprint, channel=channel, ts=ts,
                                       diff=diff_text([d])[:20000])
    for sk, marker in known.items():  # gone: the message says so, once
        if marker.get("ts"):
            note = f":white_check_mark: *Drift in {env_name} cleared*: {escape_text(sk.replace('#', ': ', 1))}"
            try:
                await runtime.slack.chat_update(channel=str(marker["channel"]), ts=str(marker["ts"]), text=note,
                                                blocks=[SectionBlock(text=note[:2900]).to_dict()])
            except SlackApiError as e:  # deleted by someone: nothing left to edit
                log.info("the cleared drift's message is gone: %s", e.response.get("error"))
        await runtime.state.delete_marker(f"DRIFT#{env_name}", sk)


async def check_forever(runtime: Runtime) -> None:
    interval = runtime.drift_check_seconds
    if interval is None or runtime.helm is None or runtime.cluster is None:
        return  # no periodic check configured, or nothing to compare with
    while True:
        try:
            # one replica per interval: the lease expires before the next round
            if await runtime.state.put_marker("DRIFTCHECK", "lease", max(1, int(interval * 0.9))):
                for env_name in runtime.config.environments:
                    try:
                        await check_environment(runtime, env_name)
                    except Exception as e:  # one environment's trouble never stops the others'
                        log.warning("the drift check of %s failed: %s", env_name, error_code(e))
        except Exception as e:
            log.warning("the drift check failed: %s", error_code(e))
        await asyncio.sleep(interval)


def register(app: AsyncApp, runtime: Runtime) -> None:
    async def ack_click(ack: AsyncAck) -> None:
        await ack()

    def parse(body: dict[str, Any]) -> tuple[str, str, str] | None:
        env, service, source = [*str(body["actions"][0].get("value", "")).split("|", 2), "", "", ""][:3]
        if env not in runtime.config.environments or service not in runtime.config.services:
            return None
        return env, service, source

    async def show_diff(body: dict[str, Any], respond: AsyncRespond) -> None:
        found = parse(body)
        if found is None:
            return
        env, service, source = found
        user, channel = body["user"]["id"], body.get("channel", {}).get("id", "")
        decision = await runtime.policy.can_read(user, env)
        if not decision:
            await respond(response_type="ephemeral", replace_original=False, text=f":no_entry: {decision.reason}")
            return
        marker = await runtime.state.get_marker(f"DRIFT#{env}", f"{service}#{source}")
        if marker is None:
            await respond(response_type="ephemeral", replace_original=False, text="This drift has cleared.")
            return
        try:
            await runtime.slack.files_upload_v2(channel=channel, content=str(marker.get("diff", "")),
                                                filename=f"drift-{env}-{service}.diff",
                                                title=f"Drift of {service} in {env}")
        except SlackApiError as e:
            await respond(response_type="ephemeral", replace_original=False,
                          text=f"I could not post the diff as a file ({e.response.get('error')}).")

    async def ignore(body: dict[str, Any], respond: AsyncRespond) -> None:
        found = parse(body)
        if found is None:
            return
        env, service, source = found
        user = body["user"]["id"]
        decision = await runtime.policy.can_lock(user, env)  # who may hold deploys back may quiet a drift
        if not decision:
            await respond(response_type="ephemeral", replace_original=False, text=f":no_entry: {decision.reason}")
            return
        key = (f"DRIFT#{env}", f"{service}#{source}")
        marker = await runtime.state.get_marker(*key)
        if marker is None:
            return
        until = int(time.time()) + IGNORE_SECONDS
        fields = {k: v for k, v in marker.items() if k not in ("pk", "sk", "ttl")}
        await runtime.state.put_marker(*key, MARKER_TTL, only_if_absent=False, **{**fields, "ignored_until": until})
        text = (f":zzz: *Drift in {env}* ignored by <@{user}> until <!date^{until}^{{date_short_pretty}} {{time}}|"
                f"tomorrow>: {escape_text(service)}: {escape_text(source)}")
        await runtime.slack.chat_update(channel=str(marker["channel"]), ts=str(marker["ts"]), text=text,
                                        blocks=[SectionBlock(text=text[:2900]).to_dict()])

    async def redeploy(body: dict[str, Any], respond: AsyncRespond) -> None:
        found = parse(body)
        if found is None:
            return
        env, service, _ = found
        who = Invocation.from_click(body)
        answer = AnswerBeside(respond)
        if runtime.draining:
            await answer(text="I'm restarting; press Re-deploy again in a few seconds.")
            return
        try:  # as `/erp deploy`: the same per-person limit, checks and one-line answers
            refusal = await over_limit(runtime, who.user_id, "changes")
            if refusal is not None:
                await answer(text=refusal)
                return
            await redeploy_recorded(service, env, who, runtime, cast(AsyncRespond, answer))
        except Exception as e:
            log.warning("the Re-deploy button failed: %s", error_code(e))
            await answer(text=f":warning: Re-deploying {service} stopped on my side ({error_code(e)}); nothing more"
                              f" was done. Try `/erp deploy {service} {env}` or the button again in a minute.")

    app.action(DIFF_ACTION)(ack=ack_click, lazy=[runtime.work.track(show_diff)])
    app.action(REDEPLOY_ACTION)(ack=ack_click, lazy=[runtime.work.track(redeploy)])
    app.action(IGNORE_ACTION)(ack=ack_click, lazy=[runtime.work.track(ignore)])
