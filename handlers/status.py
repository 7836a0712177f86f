"""`/erp status [env]`: what the cluster really runs, in one compact message for a phone.

Per service: the image tag, ready/desired replicas, the rollout state (with the
reason when it failed), and the last deploy from the audit trail; per
environment: the Helm release revision and when it was deployed, and its lock or freeze if any.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from slack_bolt.async_app import AsyncRespond

from bot.cluster.helm import HelmError
from bot.cluster.kube import ClusterUnavailable
from bot.delivery.command_parser import ErpCommand
from bot.delivery.deploy_gate import freeze_summary
from bot.delivery.image_tag import short_tag
from bot.runtime import Runtime
from handlers.erp_command import Invocation
from handlers.locks import describe
from handlers.rollback import NO_CLUSTER

ICON = {"complete": ":large_green_circle:", "progressing": ":large_yellow_circle:", "failed": ":red_circle:"}


def _when(iso: str) -> str:
    try:
        epoch = int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return iso[:16]
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{iso[:16]}>"


async def gate_lines(runtime: Runtime, env_name: str) -> list[str]:
    """The environment's lock and freeze, if any: shown whether or not the cluster can be read."""
    env = runtime.config.environments[env_name]
    lines = []
    lock = await runtime.state.get_lock(env_name)
    if lock is not None and lock.active(time.time()):
        lines.append(f":lock: {describe(lock)}")
    if env.freeze is not None and (frozen := env.freeze.state_at(datetime.now(UTC))).frozen:
        lines.append(f":snowflake: {freeze_summary(env_name, env.freeze, frozen, datetime.now(UTC))}")
    return lines


async def environment_status(runtime: Runtime, env_name: str) -> str:
    gates = await gate_lines(runtime, env_name)
    if runtime.helm is None or runtime.cluster is None:
        return "\n".join([f"*{env_name}*", *gates]) if gates else f"*{env_name}*: not locked, not frozen"
    env = runtime.config.environments[env_name]
    try:
        history = await runtime.helm.history(env.release, env.namespace, limit=5)
    except HelmError as e:
        history, release_line = [], f"release `{env.release}`: helm could not read it ({str(e)[:120]})"
    else:
        deployed = [r for r in history if r.status == "deployed"]
        current = deployed[-1] if deployed else (history[-1] if history else None)
        release_line = (f"release `{env.release}` revision *{current.number}* ({current.status},"
                        f" {_when(current.updated)})" if current else f"release `{env.release}` is not installed")
    try:
        rollouts = await runtime.cluster.rollouts(env.namespace)
    except ClusterUnavailable as e:
        return "\n".join([f"*{env_name}* · {release_line}", f":warning: {e}", *gates])
    audit = await runtime.state.list_audit([env_name], limit=50)
    lines = [f"*{env_name}* (`{env.namespace}`) · {release_line}", *gates]
    for name, svc in runtime.config.services.items():
        state = rollouts.get(svc.deployment)
        if state is None:
            lines.append(f":white_circle: {name}: not deployed")
            continue
        detail = f" ({state.reason})" if state.state == "failed" and state.reason else ""
        last = next((r for r in audit if r.service in (name, "all", "changed") and r.outcome in ("started", "ok")
                     and r.action in ("deploy", "rollback")), None)
        who = f" · {r_action(last.action)} by <@{last.actor}> {_when(last.at)}" if last else ""
        lines.append(f"{ICON.get(state.state, ':white_circle:')} {name} `{short_tag(state.image_tag)}`"
                     f" {state.ready}/{state.desired} {state.state}{detail}{who}")
    return "\n".join(lines)


def r_action(action: str) -> str:
    return {"deploy": "deployed", "rollback": "rolled back"}.get(action, action)


async def status(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    envs = [command.environment] if command.environment else list(runtime.config.environments)
    parts = [await environment_status(runtime, e) for e in envs]
    if runtime.helm is None or runtime.cluster is None:  # locks and freezes still hold: say them
        parts.append(NO_CLUSTER)
    await respond(response_type="ephemeral", replace_original=True, text="\n\n".join(parts))
