"""Refuses a Slack request seen before: a replay inside the 5 minutes a signature stays valid.

Bolt checks the signature and the timestamp's age but remembers nothing, so a
captured request could be sent again within that window and act twice. Each
signature (unique per timestamp and body) is claimed once: in this process first
(no I/O), then in the state table, which all replicas share. If the table cannot
be reached, the in-process memory still holds and the request goes on: the
signature was valid, and every change it asks for needs the table anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.aws.clients import BotoCoreError, ClientError, error_code
from bot.aws.state import StateStore

log = logging.getLogger(__name__)

WINDOW_SECONDS = 5 * 60 + 60  # Slack's 5 minutes, plus clock skew
# The check runs before the ack, and Slack gives up on an ack after 3 seconds: a slow table gets this long,
# then the request goes on on this replica's memory alone (as when the table is down).
SHARED_CHECK_BUDGET = 0.5
LOCAL_LIMIT = 50_000  # signatures remembered in this process (about 5 MB at most)


CHANGING_VERBS = {"deploy", "rollback"}  # /erp verbs that start something; buttons and modals all may


def can_change(body: dict[str, Any]) -> bool:
    if "command" in body:
        words = str(body.get("text") or "").split()
        return bool(words) and words[0].lower() in CHANGING_VERBS
    return True


class ReplayGuard:
    def __init__(self, state: StateStore, window: int = WINDOW_SECONDS) -> None:
        self.state = state
        self.window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _seen_here(self, signature: str, now: float) -> bool:
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > LOCAL_LIMIT):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return True
        self._seen[signature] = now + self.window
        return False

    async def first_time(self, signature: str, *, across_replicas: bool = True) -> bool:
        """True the first time a signature is presented (anywhere, or only here); False for a replay."""
        if self._seen_here(signature, time.monotonic()):
            return False
        if not across_replicas:
            return True
        try:
            return await asyncio.wait_for(self.state.put_marker("REPLAY", signature, self.window),
                                          SHARED_CHECK_BUDGET)
        except TimeoutError:
            log.warning("replay check on this replica only: the state table took over %.1fs", SHARED_CHECK_BUDGET)
            return True
        except (ClientError, BotoCoreError) as e:
            log.warning("replay check on this replica only: the state table did not answer (%s)", error_code(e))
            return True

    async def middleware(self, req: AsyncBoltRequest, next: Any) -> BoltResponse | None:
        """Bolt global middleware: it runs after Bolt verified the signature and its age. Requests that can
        change something are checked across replicas; the rest (help, reading) only here, to keep the ack fast."""
        signature = (req.headers.get("x-slack-signature") or [""])[0]
        if signature and not await self.first_time(signature, across_replicas=can_change(req.body)):
            log.warning("a replayed Slack request was refused")
            return BoltResponse(status=401, body="this request was already received")
        return await next()  # type: ignore[no-any-return]
