"""Brings cards' Slack messages up to date in the background, at the pace Slack allows.

The event consumer stores each event's effect on its card (DynamoDB), marks the card waiting (also
DynamoDB), hands it here and deletes the event: Slack's pace no longer holds the queue back. Here, cards
are coalesced (however many events touched a card, it is published once, from its newest state), every
due card's own message goes before any thread note, cards are published side by side (one card waiting on
Slack does not hold back another), and a card that fails is retried with a backoff, alone. The waiting mark
goes only once the card is shown and its notes are posted; if this replica dies first, another replica's
sweep publishes what it left (see `handlers.pipeline_events.sweep_waiting_cards`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from slack_sdk.errors import SlackApiError

from bot.aws.clients import error_code
from bot.aws.state import StateStore
from bot.card_store import CardStore, EditDeferred
from bot.jsonlog import log_fields

log = logging.getLogger(__name__)

CONCURRENCY = 8
MAX_BACKOFF = 300.0
DEFER_SECONDS = 1.0  # a card whose progress was skipped (Slack busy) is looked at again this soon


class CardPublisher:
    def __init__(self, cards: CardStore, state: StateStore) -> None:
        self.cards = cards
        self.state = state
        self._due: dict[str, float] = {}  # execution id -> when it may be published next (monotonic)
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def enqueue(self, execution_ids: list[str]) -> None:
        """Durably mark the cards waiting, then publish them soon. Raises if the mark could not be stored
        (the caller keeps its events then)."""
        if not execution_ids:
            return
        await self.state.mark_cards_waiting(execution_ids)
        self.schedule(execution_ids)

    def schedule(self, execution_ids: list[str]) -> None:
        now = time.monotonic()
        for execution_id in execution_ids:
            self._due.setdefault(execution_id, now)  # a card backing off keeps its time
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._due)

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            due = [e for e, at in self._due.items() if at <= now]
            if not due:
                self._wake.clear()
                wait = min((at - now for at in self._due.values()), default=None)
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass
                continue
            for execution_id in due:
                del self._due[execution_id]
            await self.publish_round(due)

    async def publish_round(self, execution_ids: list[str]) -> None:
        started_ms = int(time.time() * 1000)
        failed: set[str] = set()

        waiting: set[str] = set()  # left waiting for a person (bot not in the channel): the sweep retries
        deferred: set[str] = set()  # progress not shown while Slack is busy: shown a moment later

        async def step(execution_id: str, notes: bool) -> None:
            if execution_id in failed or execution_id in waiting or execution_id in deferred:
                return
            async with self._limit:
                try:
                    if not await self.cards.publish(execution_id, notes=notes, defer_progress=True):
                        waiting.add(execution_id)
                except EditDeferred:
                    deferred.add(execution_id)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # Slack or DynamoDB trouble: this card, alone, is tried again later
                    failed.add(execution_id)
                    reason = str(e.response.get("error")) if isinstance(e, SlackApiError) else error_code(e)
                    log.warning("could not bring the card of %s up to date: %s", execution_id, reason,
                                extra=log_fields(execution_id=execution_id))

        await asyncio.gather(*(step(e, False) for e in execution_ids))  # what the cards say, first
        await asyncio.gather(*(step(e, True) for e in execution_ids))  # then their thread notes
        now = time.monotonic()
        for execution_id in execution_ids:
            if execution_id in deferred:
                self._due.setdefault(execution_id, now + DEFER_SECONDS)
                continue
            if execution_id in failed:
                n = self._failures[execution_id] = self._failures.get(execution_id, 0) + 1
                self._due[execution_id] = now + min(MAX_BACKOFF, 2.0 ** n)  # new events do not hurry it
                continue
            self._failures.pop(execution_id, None)
            if execution_id in waiting:
                continue
            try:
                loaded = await self.cards.load(execution_id)
                if loaded is not None and loaded[0].ts and not loaded[0].outbox:
                    await self.state.clear_card_waiting(execution_id, published_from_ms=started_ms)
            except Exception as e:  # the mark stays: a sweep publishes the card again, harmlessly
                log.warning("could not clear the waiting mark of %s: %s", execution_id, error_code(e))
