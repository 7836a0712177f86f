"""Brings cards' Slack messages up to date in the background, at the pace Slack allows.

The event consumer stores each event's effect on its card (DynamoDB), marks the card waiting (also
DynamoDB), hands it here and deletes the event: Slack's pace no longer holds the queue back. Here, cards
are coalesced (however many events touched a card, it is published once, from its newest state), each card
is published by its own task (one card waiting on Slack does not hold back another; the Slack pacer sends
final states first, then progress, then thread notes), and a card that fails is retried with a backoff,
alone, then left to the sweep. The waiting mark
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
MAX_ATTEMPTS_HERE = 8  # then the card is the sweep's (its waiting mark stays)


class CardPublisher:
    def __init__(self, cards: CardStore, state: StateStore) -> None:
        self.cards = cards
        self.state = state
        self._due: dict[str, float] = {}  # execution id -> when it may be published next (monotonic)
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

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

    async def run(self) -> None:
        """Start each due card's publish as its own task (at most CONCURRENCY at once): a card that waits on
        Slack never holds back another. Slack's order across cards (final states, then progress, then notes)
        is the pacer's (bot.slack.rate_pacing)."""
        while True:
            now = time.monotonic()
            due = [e for e, at in self._due.items() if at <= now and e not in self._running]
            if not due:
                self._wake.clear()
                waits = [at - now for e, at in self._due.items() if e not in self._running]
                try:
                    await asyncio.wait_for(self._wake.wait(), min(waits, default=None))
                except TimeoutError:
                    pass
                continue
            for execution_id in due:
                del self._due[execution_id]
                self._running.add(execution_id)
                task = asyncio.ensure_future(self._publish_one(execution_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _publish_one(self, execution_id: str) -> None:
        try:
            async with self._limit:
                outcome = await self._attempt(execution_id)
        finally:
            self._running.discard(execution_id)
            self._wake.set()  # events that came meanwhile may have made it due again
        now = time.monotonic()
        if outcome == "deferred":
            self._due.setdefault(execution_id, now + DEFER_SECONDS)
        elif outcome == "failed":
            n = self._failures[execution_id] = self._failures.get(execution_id, 0) + 1
            if n <= MAX_ATTEMPTS_HERE:
                self._due[execution_id] = now + min(MAX_BACKOFF, 2.0 ** n)  # new events do not hurry it
            else:  # left to the sweep (its mark stays): memory holds only what is being worked on
                self._failures.pop(execution_id, None)
                self._due.pop(execution_id, None)
        else:
            self._failures.pop(execution_id, None)

    async def _attempt(self, execution_id: str) -> str:
        """published | waiting (for a person: the sweep retries) | deferred (Slack busy) | failed."""
        try:
            stamp = await self.state.waiting_stamp(execution_id)
            if not await self.cards.publish(execution_id, defer_progress=True):
                return "waiting"
            # shown and every note out: cleared only if nobody marked the card again since the stamp was read
            # (their change may have come after what was just shown)
            await self.state.clear_card_waiting(execution_id, seen_stamp=stamp)
            return "published"
        except EditDeferred:
            return "deferred"
        except asyncio.CancelledError:
            raise
        except Exception as e:  # Slack or DynamoDB trouble: this card, alone, is tried again later
            reason = str(e.response.get("error")) if isinstance(e, SlackApiError) else error_code(e)
            log.warning("could not bring the card of %s up to date: %s", execution_id, reason,
                        extra=log_fields(execution_id=execution_id))
            return "failed"
