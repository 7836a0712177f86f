"""Deploy cards in the state table, and their one Slack message kept in step.

Every change is a read-modify-write with an optimistic version check, retried
on conflict, so replicas handling events of the same execution never lose an
update. The Slack message is then synced: `chat.update` only when the rendered
blocks changed, and a replica whose edit may have landed after a newer one
pushes the newest state again, so a stale edit never stays on top.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.aws.state import StateStore
from bot.delivery.deploy_card import DeployCard, ThreadNote
from bot.slack.deploy_card_blocks import blocks_hash, render_card

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
CardChange = Callable[[DeployCard], list[ThreadNote] | bool | None]
Loaded = tuple[DeployCard, dict[str, Any]]  # a card and its stored item (for the version)


class CardConflict(Exception):
    pass


class CardStore:
    def __init__(self, state: StateStore, slack: AsyncWebClient) -> None:
        self.state = state
        self.slack = slack

    async def load(self, execution_id: str) -> Loaded | None:
        item = await self.state.get_card(execution_id)
        if item is None or "body" not in item:
            return None
        return DeployCard.from_json(item["body"]), item

    async def create(self, card: DeployCard) -> bool:
        """True if this call created the card; False if it already existed."""
        return await self.state.claim_card(card.execution_id, body=card.to_json(), channel=card.channel,
                                           ts=card.ts, environment=card.environment, service=card.service)

    async def mutate(self, execution_id: str, change: CardChange,
                     loaded: Loaded | None = None) -> tuple[DeployCard, list[ThreadNote]] | None:
        """Apply `change` to the latest card until the write wins; returns the card and the notes this call owns.

        `loaded`, a copy just read, saves the first read; a conflict reads again.
        """
        for attempt in range(MAX_ATTEMPTS):
            if attempt or loaded is None:
                loaded = await self.load(execution_id)
            if loaded is None:
                return None
            card, item = loaded
            before = card.to_json()
            result = change(card)
            notes = result if isinstance(result, list) else []
            after = card.to_json()
            if after == before:
                return card, []
            extra = {"ts": card.ts} if card.ts and not item.get("ts") else {}
            if await self.state.update_card(execution_id, int(item["version"]), body=after, **extra):
                return card, notes
        raise CardConflict(f"card {execution_id} kept changing under {MAX_ATTEMPTS} attempts")

    async def sync_message(self, execution_id: str) -> None:
        """Make the Slack message show the latest card; edit it only when the rendering changed."""
        pushed: str | None = None
        for _ in range(MAX_ATTEMPTS):
            loaded = await self.load(execution_id)
            if loaded is None:
                return
            card, item = loaded
            if not card.ts:
                return  # whoever posts the message renders it
            text, blocks = render_card(card)
            digest = blocks_hash(blocks)
            if digest == item.get("rendered") and pushed in (None, digest):
                return
            if pushed != digest:
                await self.slack.chat_update(channel=card.channel, ts=card.ts, text=text, blocks=blocks)
                pushed = digest
            if await self.state.update_card(execution_id, int(item["version"]), rendered=digest):
                return
            # the card moved while we edited: if what we pushed is no longer the newest, push again

    async def post_notes(self, card: DeployCard, notes: list[ThreadNote]) -> None:
        if not card.ts:
            return
        for note in notes:
            try:
                await self.slack.chat_postMessage(channel=card.channel, thread_ts=card.ts, text=note.text,
                                                  unfurl_links=False)
            except SlackApiError as e:
                log.warning("could not post a thread note %s: %s", note.key, e.response.get("error"))
