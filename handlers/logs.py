"""`/erp logs <service> [env] [since] [filter]` and `/erp logs <service> [env] stats`.

Defaults for on-call: the last 15 minutes, errors and warnings, prod when asked
from an on-call channel (else the channel's own environment, else prod). The
newest lines come back in the message; the whole result, when longer, as a
file in the channel, with the counts of lines shown and left out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from slack_bolt.async_app import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.aws.logs_insights import run_query
from bot.delivery.command_parser import ErpCommand
from bot.delivery.error_chart import buckets_from_rows, render_chart, summary
from bot.delivery.escaping import escape_text
from bot.delivery.log_lines import as_file, fit_for_message, to_lines
from bot.delivery.log_query import build_query
from bot.runtime import Runtime
from handlers.erp_command import Invocation

log = logging.getLogger(__name__)

DEFAULT_WINDOW = timedelta(minutes=15)
STATS_WINDOW = timedelta(hours=3)


def environment_for(command: ErpCommand, who: Invocation, runtime: Runtime) -> str:
    if command.environment:
        return command.environment
    if who.channel_id in runtime.config.oncall_channels:
        return "prod" if "prod" in runtime.config.environments else next(iter(runtime.config.environments))
    own = runtime.config.channel_environment(who.channel_id)
    if own:
        return own
    return "prod" if "prod" in runtime.config.environments else next(iter(runtime.config.environments))


async def logs(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    assert command.service is not None
    env = environment_for(command, who, runtime)
    group = runtime.config.services[command.service].log_group_for(env)
    end = datetime.now(UTC)
    default_window = STATS_WINDOW if command.stats else DEFAULT_WINDOW
    start = command.since.start_time(end) if command.since else end - default_window
    window = command.since.text if command.since else ("3h" if command.stats else "15m")
    query = build_query(command.filter, stats=command.stats)

    async def answer(text: str) -> None:
        await respond(response_type="ephemeral", replace_original=True, text=text)

    allowed = await runtime.policy.can_read(who.user_id, env)
    if not allowed:
        log.info("/erp logs refused for %s in %s", who.user_id, env)
        await answer(f":no_entry: {allowed.reason}")
        return

    outcome = await run_query(runtime.aws, group, start, end, query, budget=runtime.log_query_budget)
    if outcome.error == "ResourceNotFoundException":
        await answer(f"The log group `{group}` does not exist: is `{command.service}` running in {env}?")
        return
    if outcome.error in ("ThrottlingException", "LimitExceededException"):
        await answer(f":warning: CloudWatch Logs is throttling queries right now ({outcome.error}). Nothing ran;"
                     " try again in a minute or with a shorter window.")
        return
    if outcome.error:
        await answer(f":warning: CloudWatch Logs refused the query (`{outcome.error}`).")
        return
    if outcome.stopped:
        budget = runtime.log_query_budget
        await answer(f":stopwatch: The query over `{group}` ({window}) took longer than {budget:.0f}s, so I"
                     f" stopped it. Try a shorter window, e.g. `/erp logs {command.service} {env} 5m`.")
        return
    if outcome.status != "Complete":
        await answer(f":warning: The query ended as `{outcome.status}`; try again.")
        return
    scope = f"`{command.service}` in {env}, last {window}" if not command.since or not command.since.start \
        else f"`{command.service}` in {env} since {command.since.text}"
    if command.stats:
        await _stats(outcome.rows, scope, who, runtime, answer)
        return
    what = f'lines matching "{escape_text(command.filter)}"' if command.filter else "errors and warnings"
    lines = to_lines(outcome.rows)
    if not lines:
        await answer(f"No {what} for {scope}. :white_check_mark:")
        return
    text, shown = fit_for_message(lines)
    head = f"*{len(lines)} {what}* for {scope}, newest first"
    if shown == len(lines):
        await answer(f"{head}:\n{text}")
        return
    sharing = runtime.config.file_channels(env)
    if sharing and who.channel_id not in sharing:  # a protected environment's logs stay where they belong
        where = " or ".join(f"<#{c}>" for c in sharing)
        await answer(f"{head} (showing {shown}, {len(lines) - shown} more; the full result is shared only in"
                     f" {where}: ask there):\n{text}")
        return
    try:
        await runtime.slack.files_upload_v2(
            channel=who.channel_id, content=as_file(lines), filename=f"{command.service}-{env}-logs.txt",
            title=f"{command.service} {env} logs ({len(lines)} lines)",
            initial_comment=f"<@{who.user_id}> asked for `/erp logs {command.service} {env} {window}`:"
                            f" all {len(lines)} {what}, stack traces included.")
        where = "the full result is in the file I posted in this channel"
    except SlackApiError as e:
        log.warning("could not upload the log file: %s", e.response.get("error"))
        where = f"I could not post the full result as a file ({e.response.get('error')})"
    await answer(f"{head} (showing {shown}, {len(lines) - shown} more; {where}):\n{text}")


async def _stats(rows: list[dict[str, str]], scope: str, who: Invocation, runtime: Runtime,
                 answer: Callable[[str], Awaitable[None]]) -> None:
    buckets = buckets_from_rows(rows)
    line = summary(buckets)
    try:
        await runtime.slack.files_upload_v2(
            channel=who.channel_id, content=render_chart(buckets, f"Errors per 5 minutes: {scope}"),
            filename="errors-per-5m.png", title=f"Errors per 5 minutes, {scope.replace('`', '')}",
            initial_comment=f"<@{who.user_id}>: {line} ({scope}).")
        await answer(f"Errors per 5 minutes for {scope}: {line}. The chart is in this channel.")
    except SlackApiError as e:
        counts = ", ".join(f"{b.start:%H:%M} {b.count}" for b in buckets[-12:]) or "none"
        await answer(f"Errors per 5 minutes for {scope}: {line}. (No chart: {e.response.get('error')}.) {counts}")
