"""`/erp history [service] [env]`: recent deploys, approvals and rollbacks from the audit trail."""

from __future__ import annotations

from datetime import datetime

from slack_bolt.async_app import AsyncRespond

from bot.command_parser import ErpCommand
from bot.runtime import Runtime
from handlers.erp_command import Invocation

OUTCOME_ICON = {"ok": ":white_check_mark:", "started": ":rocket:", "refused": ":no_entry:", "failed": ":x:"}
DONE = {"deploy": "deployed", "approve": "approved", "reject": "rejected", "rollback": "rolled back"}


def describe(action: str, outcome: str, target: str) -> str:
    """'started a deploy of employee to prod', 'approved employee in prod', 'tried to approve ...: refused'."""
    if action == "deploy" and outcome == "started":
        return f"started a deploy of {target}"
    if outcome == "ok":
        return f"{DONE.get(action, action)} {target}"
    return f"tried to {action} {target}: {outcome}"


async def history(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    envs = [command.environment] if command.environment else list(runtime.config.environments)
    records = await runtime.state.list_audit(envs, service=command.service, limit=15)
    scope = " ".join(x for x in (command.service, command.environment) if x) or "all services and environments"
    if not records:
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
        detail = f" ({r.detail[:80]})" if r.detail and r.outcome in ("refused", "failed") else ""
        reason = f" ({r.detail[:120]})" if r.detail and r.action == "reject" and r.outcome == "ok" else ""
        what = describe(r.action, r.outcome, target)
        lines.append(f"{OUTCOME_ICON.get(r.outcome, '•')} {when} <@{r.actor}> {what}{detail}{reason}")
    await respond(response_type="ephemeral", replace_original=True,
                  text=f"*Recent activity, {scope}* (newest first)\n" + "\n".join(lines))
