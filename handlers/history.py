"""`/erp history [service] [env]`: recent deploys, approvals and rollbacks from the audit trail."""

from __future__ import annotations

from datetime import datetime

from slack_bolt.async_app import AsyncRespond

from bot.cluster.helm import HelmError, service_tags
from bot.delivery.command_parser import ErpCommand
from bot.delivery.escaping import escape_text
from bot.delivery.image_tag import short_tag
from bot.runtime import Runtime
from handlers.erp_command import Invocation

OUTCOME_ICON = {"ok": ":white_check_mark:", "started": ":rocket:", "refused": ":no_entry:", "failed": ":x:"}
TRY = {"rollback": "roll back"}
DONE = {"deploy": "deployed", "approve": "approved", "reject": "rejected", "rollback": "rolled back"}


def describe(action: str, outcome: str, target: str) -> str:
    """'started a deploy of employee to prod', 'approved employee in prod', 'tried to approve ...: refused'."""
    if action == "deploy" and outcome == "started":
        return f"started a deploy of {target}"
    if outcome == "ok":
        return f"{DONE.get(action, action)} {target}"
    return f"tried to {TRY.get(action, action)} {target}: {outcome}"


async def history(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    envs = [command.environment] if command.environment else list(runtime.config.environments)
    records = await runtime.state.list_audit(envs, service=command.service, limit=15)
    scope = " ".join(x for x in (command.service, command.environment) if x) or "all services and environments"
    if not records and not (command.environment and runtime.helm is not None):
        await respond(response_type="ephemeral", replace_original=True,
                      text=f"No deploys, approvals or rollbacks recorded yet for {scope}.")
        return
    lines = []
    for r in records:
        epoch = int(datetime.fromisoformat(r.at).timestamp())
        when = f"<!date^{epoch}^{{date_short}} {{time}}|{r.at[:16]}>"
        target = f"{r.service} in {r.environment}" if r.service else r.environment
        if r.action == "deploy":
            target = f"{r.service} to {r.environment}" if r.service else f"to {r.environment}"
        detail = f" ({escape_text(r.detail[:80])})" if r.detail and r.outcome in ("refused", "failed") else ""
        reason = f" ({escape_text(r.detail[:120])})" if r.detail and r.action == "reject" and r.outcome == "ok" else ""
        if r.outcome == "expired":  # the pipeline's doing, not a person's
            lines.append(f":hourglass: {when} the approval of {target} expired ({r.detail or 'nobody decided'})")
            continue
        what = describe(r.action, r.outcome, target)
        lines.append(f"{OUTCOME_ICON.get(r.outcome, '•')} {when} <@{r.actor}> {what}{detail}{reason}")
    text = f"*Recent activity, {scope}* (newest first)\n" + "\n".join(lines)
    if command.environment and runtime.helm is not None:
        text += "\n\n" + await release_history(runtime, command.environment, command.service)
    await respond(response_type="ephemeral", replace_original=True, text=text)


async def release_history(runtime: Runtime, environment: str, service: str | None, limit: int = 6) -> str:
    """Helm's revisions, newest first, with each service's image tag in that revision."""
    assert runtime.helm is not None
    env = runtime.config.environments[environment]
    try:
        revisions = (await runtime.helm.history(env.release, env.namespace, limit=limit))[::-1]
    except HelmError as e:
        return f"Helm history of `{env.release}` unavailable: {str(e)[:150]}"
    if not revisions:
        return f"`{env.release}` is not installed in `{env.namespace}`."
    lines = [f"*Helm release `{env.release}` in `{env.namespace}`*"]
    for r in revisions:
        try:
            tags = service_tags(await runtime.helm.values(env.release, env.namespace, r.number))
        except HelmError:
            tags = {}
        shown = {k: v for k, v in tags.items() if service is None or k == service}
        images = ", ".join(f"{k} `{short_tag(v)}`" for k, v in shown.items())
        lines.append(f"rev *{r.number}* {r.updated[:16].replace('T', ' ')} {r.status}: {images}")
    return "\n".join(lines)
