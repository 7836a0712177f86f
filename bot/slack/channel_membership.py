"""Which of the configured channels the bot is in, and what to tell a person when it is not.

The manifest grants `chat:write`, not `chat:write.public`, so the bot can post only in channels it was
invited to; Slack answers `not_in_channel` anywhere else. A fresh install is in none. So at start-up (and
every few minutes) each environment's channel is looked up with `conversations.info`: the log and
`/metrics` name every channel the bot still has to be invited to. `/readyz` does not depend on it: a
missing invite is for a person to fix, and restarting the pod would not fix it.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics

log = logging.getLogger(__name__)

RECHECK_SECONDS = 300.0
# Slack's answers that mean "this channel cannot take the bot's message", all fixed by a person: an invite
# (not_in_channel; a private channel the bot is not in answers channel_not_found) or an unarchive.
UNPOSTABLE = ("not_in_channel", "channel_not_found", "is_archived")
BOT_NAME = "erp-chatops"


class ChannelMembership:
    def __init__(self, slack: AsyncWebClient, metrics: Metrics, channels: dict[str, str]) -> None:
        self.slack = slack
        self.channels = dict(channels)  # environment -> channel id
        self.names: dict[str, str] = {}  # channel id -> name, once seen
        self.member = Gauge("erp_chatops_slack_channel_member",
                            "1 if the bot is a member of the environment's channel, 0 if it must be invited",
                            ["environment", "channel_id"], registry=metrics.registry)

    def label(self, channel: str) -> str:
        """`#erp-prod` when the name is known; Slack's own channel mention otherwise."""
        name = self.names.get(channel)
        return f"#{name}" if name else f"<#{channel}>"

    def invite_hint(self, channel: str) -> str:
        where = self.label(channel)
        return f"I'm not in {where}: invite me there (type `/invite @{BOT_NAME}` in {where}), then try again."

    def saw(self, channel: str, member: bool) -> None:
        for env, cid in self.channels.items():
            if cid == channel:
                self.member.labels(env, channel).set(1 if member else 0)

    async def check(self) -> list[str]:
        """Look each configured channel up; returns the labels of those the bot is not in."""
        missing: list[str] = []
        for env, channel in self.channels.items():
            try:
                info = (await self.slack.conversations_info(channel=channel))["channel"]
            except SlackApiError as e:
                error = str(e.response.get("error"))
                log.warning("the %s channel %s cannot be looked up: %s", env, channel, error)
                missing.append(f"{channel} ({error})")
                self.member.labels(env, channel).set(0)
                continue
            self.names[channel] = str(info.get("name") or channel)
            member = bool(info.get("is_member"))
            self.member.labels(env, channel).set(1 if member else 0)
            if not member:
                missing.append(self.label(channel))
        if missing:
            log.warning("the bot is not in %s: invite it (/invite @%s) or cards and answers there fail",
                        ", ".join(missing), BOT_NAME)
        return missing

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Slack unreachable: the next round tells
                log.warning("could not check the bot's channels: %s", e)
            await asyncio.sleep(RECHECK_SECONDS)
