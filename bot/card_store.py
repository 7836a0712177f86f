"""Deploy cards in the state table, and their one Slack message kept in step.

Every change is a read-modify-write with an optimistic version check, retried
on conflict, so replicas handling events of the same execution never lose an
update. The Slack message is then synced: `chat.update` only when the rendered
blocks changed, and a replica whose edit may have landed after a newer one
pushes the newest state again, so a stale edit never stays on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.aws.state import StateStore
from bot.delivery.card_lifecycle import card_phase
from bot.delivery.deploy_card import DeployCard, ThreadNote
from bot.jsonlog import log_fields
from bot.slack.channel_membership import UNPOSTABLE
from bot.slack.deploy_card_blocks import CARD_EVENT_TYPE, blocks_hash, render_card
from bot.slack.rate_pacing import PROGRESS, URGENT, SlackPacer, already_paced

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
# a thread note claimed by a poster that then died is posted by another; longer than one post with all of
# slack_sdk's retries (three 429 waits and two 10 s timeouts)
NOTE_LEASE = timedelta(seconds=120)
# Slack's answers that no retry fixes. For the channel (UNPOSTABLE: not invited; a private channel the bot is
# not in answers channel_not_found; archived): the card waits for a person, and the sweeper retries it. For an
# edit or a note's content or thread (chat.update / chat.postMessage error lists): logged and skipped.
UNFIXABLE_EDIT = ("cant_update_message", "edit_window_closed", "msg_too_long", "invalid_blocks", "no_text")
UNFIXABLE_NOTE = ("msg_too_long", "no_text", "invalid_blocks", "cannot_reply_to_message",
                  "restricted_action_thread_locked", "restricted_action_read_only_channel")


class EditDeferred(Exception):
    """A card's progress edit was skipped because Slack is busy: publish it again shortly."""


class NotePending(Exception):
    """A note is being posted by another replica: try this card again later."""
CardChange = Callable[[DeployCard], list[ThreadNote] | bool | None]
Loaded = tuple[DeployCard, dict[str, Any]]  # a card and its stored item (for the version)


class CardConflict(Exception):
    pass


class CardLocks:
    """One asyncio lock per card this replica is changing, dropped once nobody holds or awaits it: this
    replica's writers of one card (an event's handler, the publisher's thread notes) take turns instead of
    failing each other's version checks; other replicas are still met by the version check."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, execution_id: str) -> AsyncIterator[bool]:
        """Yields True if another writer held the card first (so a copy read before is likely stale)."""
        lock, users = self._locks.get(execution_id, (asyncio.Lock(), 0))
        self._locks[execution_id] = (lock, users + 1)
        try:
            waited = lock.locked()
            async with lock:
                yield waited
        finally:
            lock, users = self._locks[execution_id]
            if users == 1:
                del self._locks[execution_id]
            else:
                self._locks[execution_id] = (lock, users - 1)


class CardStore:
    def __init__(self, state: StateStore, slack: AsyncWebClient) -> None:
        self.state = state
        self.slack = slack
        self._changing = CardLocks()
        self._syncing: dict[str, asyncio.Future[None]] = {}  # execution id -> its running edit's outcome
        self._dirty: set[str] = set()  # asked to sync again while an edit was running

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
        async with self._changing.hold(execution_id) as waited:
            if waited:
                loaded = None  # read before another writer of this replica changed it: read it again
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

    async def sync_message(self, execution_id: str, *, defer_progress: bool = False) -> None:
        """Make the Slack message show the latest card; edit it only when the rendering changed.

        Coalesced in this replica: while one edit of a card waits for Slack (its rate limit, say), further
        calls for that card only mark it dirty, and the running one renders again from the newest state when
        it is done, so intermediate states are skipped rather than queued."""
        running = self._syncing.get(execution_id)
        if running is not None:  # its outcome is ours too: a failed edit fails every caller it stood for
            self._dirty.add(execution_id)
            try:
                await asyncio.shield(running)
            except EditDeferred:
                if defer_progress:
                    raise
                await self.sync_message(execution_id)  # we asked not to skip progress: edit it ourselves
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncing[execution_id] = done
        try:
            while True:
                self._dirty.discard(execution_id)
                await self._sync_once(execution_id, defer_progress)
                if execution_id not in self._dirty:
                    break
        except BaseException as e:
            done.set_exception(e if isinstance(e, Exception) else RuntimeError("the card's edit was cancelled"))
            done.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            done.set_result(None)
        finally:
            del self._syncing[execution_id]
            self._dirty.discard(execution_id)

    async def _sync_once(self, execution_id: str, defer_progress: bool = False) -> None:
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
                pacer: SlackPacer | None = getattr(self.slack, "pacer", None)
                if pacer is not None:
                    # wait for Slack's pace first, then render what is newest by then: states that came and
                    # went while we waited are never sent; a final state or an approval request goes first,
                    # and mere progress is skipped while Slack is busy (the publisher comes back to it)
                    urgent = card_phase(card) not in ("starting", "running")
                    if not urgent and defer_progress:
                        if not pacer.spare("chat.update", card.channel):
                            raise EditDeferred(execution_id)
                    else:
                        await pacer.slot("chat.update", card.channel, URGENT if urgent else PROGRESS)
                    latest = await self.load(execution_id)
                    if latest is None:
                        return
                    card, item = latest
                    if not card.ts:
                        return
                    text, blocks = render_card(card)
                    digest = blocks_hash(blocks)
                token = already_paced.set(True)
                try:
                    await self.slack.chat_update(channel=card.channel, ts=str(card.ts), text=text, blocks=blocks)
                finally:
                    already_paced.reset(token)
                pushed = digest
            if await self.state.update_card(execution_id, int(item["version"]), rendered=digest):
                return
            # the card moved while we edited: if what we pushed is no longer the newest, push again

    async def publish(self, execution_id: str, *, defer_progress: bool = False) -> bool:
        """Show the card's latest state and post its pending thread notes. Slack errors that retrying cannot
        fix are handled here, for this card only: a deleted message is posted again; a channel the bot cannot
        post in (not invited, private and not invited, archived) leaves the card waiting, remembered for the
        sweeper; an edit or a note Slack refuses for its content is logged and skipped. Anything else raises,
        and this card's events come back later. True once the card shows its state and its notes are out;
        False if it is left waiting."""
        loaded = await self.load(execution_id)
        if loaded is None:
            return True
        if not loaded[0].ts:
            return False  # no message yet: a push's card is posted by its next event or the sweep
        card = loaded[0]
        try:
            try:
                await self.sync_message(execution_id, defer_progress=defer_progress)
            except SlackApiError as e:
                error = str(e.response.get("error"))
                if error == "message_not_found":  # someone deleted the card's message
                    await self._post_again(card)
                    await self.sync_message(execution_id)
                elif error in UNFIXABLE_EDIT:
                    log.warning("Slack refused the card of %s: %s", execution_id, error,
                                extra=log_fields(execution_id=execution_id))
                else:
                    raise
            await self._flush_outbox(execution_id)
        except SlackApiError as e:
            error = str(e.response.get("error"))
            if error not in UNPOSTABLE:
                raise
            log.warning("the card of %s waits: Slack says %s for <#%s>", execution_id, error, card.channel,
                        extra=log_fields(execution_id=execution_id, channel=card.channel))
            await self.state.mark_card_waiting(execution_id)
            return False
        return True

    async def _flush_outbox(self, execution_id: str) -> None:
        """Post pending notes in order, each claimed first (a lease, so two replicas do not both post it and a
        dead poster's claim runs out) and cleared only after Slack took it. A note another replica holds
        raises NotePending: this card's events come back after a backoff, and the note is seen to then."""
        while await self._post_next_note(execution_id):
            pass

    async def _post_next_note(self, execution_id: str) -> bool:
        claimed: list[str] | None = None
        held_elsewhere = False
        now = datetime.now(UTC)

        def claim(c: DeployCard) -> bool:
            nonlocal claimed, held_elsewhere
            claimed, held_elsewhere = None, False
            if not c.outbox or not c.ts:
                return False
            head = c.outbox[0]
            if len(head) > 2 and head[2] and datetime.fromisoformat(head[2]) > now:
                held_elsewhere = True  # another replica is posting it (and then the rest)
                return False
            c.outbox[0] = [head[0], head[1], (now + NOTE_LEASE).isoformat(timespec="seconds")]
            claimed = c.outbox[0]
            return True

        result = await self.mutate(execution_id, claim)
        if held_elsewhere:
            raise NotePending(f"a thread note of {execution_id} is being posted by another replica")
        if result is None or claimed is None:
            return False
        card, (key, text, lease) = result[0], claimed
        try:
            await self.slack.chat_postMessage(channel=card.channel, thread_ts=card.ts, text=text,
                                              unfurl_links=False)
        except SlackApiError as e:
            if str(e.response.get("error")) not in UNFIXABLE_NOTE:
                await self.mutate(execution_id, lambda c: _release_note(c, key, lease))
                raise
            log.warning("Slack refused the thread note %s of %s: %s; it is dropped", key, execution_id,
                        e.response.get("error"), extra=log_fields(execution_id=execution_id))
        except BaseException:
            await self.mutate(execution_id, lambda c: _release_note(c, key, lease))
            raise
        await self.mutate(execution_id, lambda c: _clear_note(c, key))
        return True

    async def post_message(self, card: DeployCard) -> str:
        """Post the card as a new message, named by its execution in the message metadata (so a replica can
        find it again after its poster died); returns its ts."""
        text, blocks = render_card(card)
        posted = await self.slack.chat_postMessage(
            channel=card.channel, text=text, blocks=blocks,
            metadata={"event_type": CARD_EVENT_TYPE, "event_payload": {"execution_id": card.execution_id}})
        return str(posted["ts"])

    async def record_message(self, card: DeployCard, ts: str, replacing: str | None) -> bool:
        """Make `ts` the card's message, if the card still has `replacing` (None: no message yet). If another
        replica got there first, theirs is the card and ours is deleted; False then."""
        lost = False

        def record(c: DeployCard) -> None:  # mutate may call it again on a conflict: the last call counts
            nonlocal lost
            lost = c.ts not in (replacing, ts)
            if not lost:
                c.ts, c.posting_since = ts, None
        await self.mutate(card.execution_id, record)
        if lost:
            log.warning("a second message for one card was posted; deleting it", extra=log_fields(ts=ts))
            try:
                await self.slack.chat_delete(channel=card.channel, ts=ts)
            except SlackApiError as e:
                log.warning("could not delete the second card message: %s", e.response.get("error"))
        return not lost

    async def _post_again(self, card: DeployCard) -> None:
        """The card's message was deleted in Slack: post it again (its pending notes follow in the new thread)."""
        ts = await self.post_message(card)
        if await self.record_message(card, ts, replacing=card.ts):
            log.warning("the card of %s was deleted in Slack; posted it again", card.execution_id,
                        extra=log_fields(execution_id=card.execution_id, ts=ts))


def _clear_note(c: DeployCard, key: str) -> None:
    c.outbox = [n for n in c.outbox if n[0] != key]


def _release_note(c: DeployCard, key: str, lease: str) -> None:
    """Give our claim back; a claim that ran out and was taken by another replica stays theirs."""
    c.outbox = [[n[0], n[1], ""] if n[0] == key and n[2:] == [lease] else n for n in c.outbox]
