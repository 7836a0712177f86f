"""`/erp freeze [env]`: whether an environment is frozen now, until when, and its next freeze windows."""

from __future__ import annotations

from datetime import UTC, datetime

from slack_bolt.async_app import AsyncRespond

from bot.delivery.command_parser import ErpCommand
from bot.delivery.deploy_gate import freeze_summary
from bot.delivery.freeze_calendar import in_words
from bot.runtime import Runtime
from handlers.erp_command import Invocation


def freeze_lines(runtime: Runtime, env_name: str, now: datetime) -> list[str]:
    calendar = runtime.config.environments[env_name].freeze
    if calendar is None:
        return [f":white_circle: {env_name} has no freeze windows."]
    state = calendar.state_at(now)
    zone = f"{calendar.timezone}, {calendar.mode} mode"
    if state.frozen:
        lines = [f":snowflake: {freeze_summary(env_name, calendar, state, now)} ({zone}). An approver can break"
                 f" the glass for one deploy: `/erp deploy <service> {env_name} break-glass <reason>`."]
    else:
        nxt = (f"; the next freeze starts {calendar.local(state.closes_at)} (in {in_words(state.closes_at - now)})"
               if state.closes_at else "")
        lines = [f":large_green_circle: {env_name} is open for deploys ({zone}){nxt}."]
    upcoming = [i for i in calendar.upcoming(now, 4) if i.start > now][:3]
    lines += [f"   • {i.name}: {calendar.local(i.start)} to {calendar.local(i.end)}" for i in upcoming]
    return lines


async def freeze(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    now = datetime.now(UTC)
    envs = [command.environment] if command.environment else list(runtime.config.environments)
    lines = [line for env in envs for line in freeze_lines(runtime, env, now)]
    await respond(response_type="ephemeral", replace_original=True, text="\n".join(lines))
