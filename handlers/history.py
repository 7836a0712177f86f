"""`/erp history [service] [env]`: recent deploys, approvals and rollbacks from the audit trail."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from slack_bolt.async_app import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.cluster.helm import HelmError, service_tags
from bot.delivery.command_parser import ErpCommand
from bot.delivery.escaping import escape_text
from bot.delivery.image_tag import short_tag
from bot.runtime import Runtime
from handlers.erp_command import Invocation

OUTCOME_ICON = {"ok": ":white_check_mark:", "started": ":rocket:", "refused": ":no_entry:", "failed": ":x:"}
TRY = {"rollback": "roll back", "lock_takeover": "take over the lock of", "break_glass": "break the glass for",
       "soak_override": "override the soak time of", "redeploy": "re-deploy"}
DONE = {"deploy": "deployed", "approve": "approved", "reject": "rejected", "rollback": "rolled back",
        "lock": "locked", "unlock": "unlocked", "lock_takeover": "took over the lock of",
        "lock_expired": "held the lock until it expired on", "break_glass": "broke the freeze's glass for",
        "soak_override": "overrode the soak time of", "promote": "promoted"}


def describe(action: str, outcome: str, target: str) -> str:
    """'started a deploy of employee to prod', 'approved employee in prod', 'tried to approve ...: refused'."""
    if action in ("deploy", "promote", "redeploy") and outcome == "started":
        return f"started a {action.replace('redeploy', 're-deploy')} of {target}"
    if outcome == "ok":
        return f"{DONE.get(action, action)} {target}"
    return f"tried to {TRY.get(action, action)} {target}: {outcome}"


CSV_FIELDS = ("at", "actor", "action", "environment", "service", "outcome", "detail", "execution_id", "altered")
EXPORT_LIMIT = 10_000


async def export(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    """`/erp history <env> [service] [since] csv`: the period's audit records as a CSV file."""
    assert command.environment is not None
    env = command.environment

    async def answer(text: str) -> None:
        await respond(response_type="ephemeral", replace_original=True, text=text)

    allowed = await runtime.policy.can_read(who.user_id, env)
    if not allowed:
        await answer(f":no_entry: {allowed.reason.replace(' logs', ' audit trail')}")
        return
    sharing = runtime.config.file_channels(env)
    if sharing and who.channel_id not in sharing:
        await answer(f"{env}'s audit trail is shared only in {' or '.join(f'<#{c}>' for c in sharing)}: ask there.")
        return
    now = datetime.now(UTC)
    start = command.since.start_time(now) if command.since else now - timedelta(days=30)
    records = await runtime.state.list_audit([env], service=command.service, limit=EXPORT_LIMIT,
                                             since=start.isoformat(timespec="seconds"))
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)  # every cell quoted: no separator starts a new one
    writer.writerow(CSV_FIELDS)
    for r in reversed(records):  # oldest first, as a spreadsheet reads
        row = asdict(r)
        # a cell a spreadsheet would run as a formula is kept as text (OWASP "CSV injection")
        writer.writerow(["'" + v if isinstance(v, str) and v[:1] and v[:1] in "=+-@\t\r" else v
                         for v in (row.get(f) for f in CSV_FIELDS)])
    scope = f"{command.service + ' in ' if command.service else ''}{env}"
    name = f"erp-audit-{env}{'-' + command.service if command.service else ''}-{start:%Y%m%d}-{now:%Y%m%d}.csv"
    try:
        await runtime.slack.files_upload_v2(channel=who.channel_id, content=out.getvalue(), filename=name,
                                            title=f"Audit trail, {scope}",
                                            initial_comment=f"<@{who.user_id}> exported the audit trail of {scope}"
                                                            f" since {start:%Y-%m-%d %H:%M} UTC: {len(records)}"
                                                            " records.")
    except SlackApiError as e:
        await answer(f":warning: I could not post the file ({e.response.get('error')}).")
        return
    altered = sum(r.altered for r in records)
    await answer(f"{len(records)} records of {scope} since {start:%Y-%m-%d %H:%M} UTC are in `{name}` in this channel"
                 + (f"; :warning: {altered} of them do not carry my seal (written or changed outside the bot)."
                    if altered else "."))


async def history(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    if command.export:
        await export(command, who, runtime, respond)
        return
    envs = [command.environment] if command.environment else list(runtime.config.environments)
    since = command.since.start_time(datetime.now(UTC)).isoformat(timespec="seconds") if command.since else None
    records = await runtime.state.list_audit(envs, service=command.service, limit=15, since=since)
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
        if r.action in ("deploy", "promote", "redeploy"):
            target = f"{r.service} to {r.environment}" if r.service else f"to {r.environment}"
        detail = f" ({escape_text(r.detail[:80])})" if r.detail and r.outcome in ("refused", "failed") else ""
        reason = f" ({escape_text(r.detail[:120])})" if r.detail and r.action == "reject" and r.outcome == "ok" else ""
        if r.outcome == "expired":  # the pipeline's doing, not a person's
            lines.append(f":hourglass: {when} the approval of {target} expired ({r.detail or 'nobody decided'})")
            continue
        what = describe(r.action, r.outcome, target)
        altered = " :warning: _not sealed by the bot: written or changed outside it_" if r.altered else ""
        lines.append(f"{OUTCOME_ICON.get(r.outcome, '•')} {when} {r.who} {what}{detail}{reason}{altered}")
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
