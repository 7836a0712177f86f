"""The `/erp` slash command: parse, answer or acknowledge at once, then dispatch.

Help and every usage mistake are answered inside the acknowledgement (a few
milliseconds). A verb with real work is acknowledged empty and runs in a Bolt
lazy listener, tracked for graceful shutdown, and answers once: Slack cannot
replace a slash command's earlier answer (replace_original acts only on messages
with buttons), so an interim "working on it" note would stay behind as a second
message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.aws.clients import BotoCoreError, ClientError, aws_trouble, error_code
from bot.delivery.command_parser import ErpCommand, UsageError
from bot.jsonlog import log_fields, request_id
from bot.runtime import Runtime
from handlers.help import help_reply

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Invocation:
    """Who typed the command, where, and how to answer them."""

    user_id: str
    channel_id: str
    response_url: str | None
    trigger_id: str | None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Invocation:
        return cls(
            user_id=str(payload.get("user_id", "")),
            channel_id=str(payload.get("channel_id", "")),
            response_url=payload.get("response_url"),
            trigger_id=payload.get("trigger_id"),
        )


    @classmethod
    def from_click(cls, body: dict[str, Any]) -> Invocation:
        """Who pressed a button, where."""
        return cls(user_id=body["user"]["id"], channel_id=body.get("channel", {}).get("id", ""),
                   response_url=body.get("response_url"), trigger_id=body.get("trigger_id"))


class AnswerBeside:
    """`respond` for a button on a public message: the verbs answer with replace_original=True (right for
    a slash command's own answer), which there would overwrite the message for everyone; this answers the
    clicker alone, beside it."""

    def __init__(self, respond: AsyncRespond) -> None:
        self._respond = respond

    async def __call__(self, **kwargs: Any) -> Any:
        return await self._respond(**{**kwargs, "replace_original": False, "response_type": "ephemeral"})


async def over_limit(runtime: Runtime, user: str, kind: str) -> str | None:
    """The one-line refusal when `user` is over the per-person limit of `kind` (shared by every replica)."""
    wait = await runtime.state.count_use(f"{user}#{kind}", runtime.user_limits[kind], runtime.user_limit_window)
    if wait is None:
        return None
    return (f":hourglass: That is {runtime.user_limits[kind]} {kind} from you in {runtime.user_limit_window}s,"
            f" the most I take; try again in {wait}s.")


LIMITED = {"deploy": "changes", "promote": "changes", "rollback": "changes", "lock": "changes",
           "logs": "log queries"}  # verb -> per-person limit
VerbHandler = Callable[[ErpCommand, Invocation, Runtime, AsyncRespond], Awaitable[None]]


def register(app: AsyncApp, runtime: Runtime, verbs: dict[str, VerbHandler]) -> None:
    def parse(text: str) -> ErpCommand | UsageError:
        try:
            return runtime.parser.parse(text)
        except UsageError as e:
            return e

    async def acknowledge(ack: AsyncAck, command: dict[str, Any]) -> None:
        started = time.perf_counter()
        parsed = parse(command.get("text", ""))
        verb = parsed.verb if isinstance(parsed, ErpCommand) else "invalid"
        try:
            if isinstance(parsed, UsageError):
                await ack(response_type="ephemeral", text=parsed.message)
            elif parsed.verb == "help":
                await ack(**help_reply(runtime.config, parsed.topic))
            elif runtime.draining:
                await ack(response_type="ephemeral", text="I'm restarting; send the command again in a few seconds.")
            else:
                await ack()
        finally:
            runtime.metrics.command_latency.labels(verb).observe(time.perf_counter() - started)

    async def run(command: dict[str, Any], respond: AsyncRespond) -> None:
        parsed = parse(command.get("text", ""))
        if not isinstance(parsed, ErpCommand) or parsed.verb not in verbs or runtime.draining:
            return  # already answered in the ack
        who = Invocation.from_payload(command)
        try:
            kind = LIMITED.get(parsed.verb)
            if kind is not None:
                refusal = await over_limit(runtime, who.user_id, kind)
                if refusal is not None:
                    log.warning("/erp %s refused: %s is over the per-person limit", parsed.verb, who.user_id,
                                extra=log_fields(verb=parsed.verb, user=who.user_id, reason="user_limit"))
                    await respond(response_type="ephemeral", replace_original=True, text=refusal)
                    return
            await verbs[parsed.verb](parsed, who, runtime, respond)
        except (ClientError, BotoCoreError) as e:  # botocore's retries gave up: say so, in words
            log.warning("/erp %s stopped: %s", parsed.verb, error_code(e),
                        extra=log_fields(verb=parsed.verb, user=who.user_id, reason=error_code(e)))
            await respond(response_type="ephemeral", replace_original=True,
                          text=f":warning: {aws_trouble(e)} right now, so `/erp {parsed.verb}` stopped before"
                               " changing anything. Try again in a minute.")
        except Exception:
            log.exception("/erp %s failed", parsed.verb,
                          extra=log_fields(verb=parsed.verb, user=who.user_id, channel=who.channel_id))
            ref = request_id.get() or "-"
            await respond(response_type="ephemeral", replace_original=True,
                          text=f":warning: `/erp {parsed.verb}` failed on my side and nothing more was done."
                               f" Try again, or tell the bot's owners (reference `{ref}`).")

    app.command("/erp")(ack=acknowledge, lazy=[runtime.work.track(run)])
