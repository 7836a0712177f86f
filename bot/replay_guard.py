"""Refuses a Slack request seen before: a replay inside the 5 minutes a signature stays valid.

Bolt checks the signature and the timestamp's age but remembers nothing, so a
captured request could be sent again within that window and act twice. Each
signature (unique per timestamp and body) is claimed once: in this process first
(no I/O, before the ack: a replay to this replica gets a 401), then in the state
table, which all replicas share. The shared claim is not on the ack's path: the
work after the ack (every lazy listener, through `InFlight.track`) makes it
first and does nothing for a replay (`first_delivery`).
If the table cannot be reached, the in-process memory still holds and the
request goes on: the signature was valid, and every change it asks for needs
the table anyway.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from contextvars import ContextVar
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.aws.clients import error_code
from bot.aws.state import StateStore

log = logging.getLogger(__name__)

# Bolt accepts a timestamp up to 5 minutes from now, either way (abs(now - ts) <= 300): a signature stays
# valid until its signed time plus 5 minutes, however early it arrives; we remember it that long, plus skew.
VALID_SECONDS = 5 * 60
SKEW_SECONDS = 60
# The shared check runs after the ack, and the work waits for it: a slow table gets this long, then the request
# goes on on this replica's memory alone (as when the table is down). Short: a click that opens a modal has a
# trigger_id that lives 3 seconds.
SHARED_CHECK_BUDGET = 1.0
LOCAL_LIMIT = 50_000  # signatures remembered in this process (about 5 MB at most)

# /erp verbs that only read: claimed in this replica only. Every other verb, button and modal may change
# something (a replayed /erp promote would start a second pipeline run) and is claimed across replicas.
READING_VERBS = {"help", "locks", "freeze", "logs", "scan", "status", "history"}


class SharedClaim:
    """One request's signature claimed in the state table, once, when the work after the ack first asks: a
    request with no such work (a link button, a usage error) costs no write."""

    def __init__(self, guard: ReplayGuard, signature: str, seconds: float) -> None:
        self.guard, self.signature, self.seconds = guard, signature, seconds
        self._claim: asyncio.Future[bool] | None = None

    async def first(self) -> bool:
        if self._claim is None:  # the request's lazy listeners share the one claim
            self._claim = asyncio.ensure_future(self.guard._first_across_replicas(self.signature, self.seconds))
        return await asyncio.shield(self._claim)


# The claim of the request being handled: set by the middleware in the request's task, so the lazy listeners
# Bolt starts from it (tasks copy the context they are created in) see it, and no other request does.
shared_claim: ContextVar[SharedClaim | None] = ContextVar("shared_claim", default=None)


async def first_delivery() -> bool:
    """False when the request being handled was already received by another replica: do nothing for it."""
    claim = shared_claim.get()
    return True if claim is None else await claim.first()


def can_change(body: dict[str, Any]) -> bool:
    if "command" in body:
        words = str(body.get("text") or "").split()
        return bool(words) and words[0].lower() not in READING_VERBS
    return True


class ReplayGuard:
    def __init__(self, state: StateStore, valid_seconds: int = VALID_SECONDS, skew_seconds: int = SKEW_SECONDS,
                 clock: Any = time.time) -> None:
        self.state = state
        self.valid, self.skew, self.clock = valid_seconds, skew_seconds, clock
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []  # a heap: (wall-clock expiry, signature)

    def _seen_here(self, signature: str, now: float, until: float) -> bool:
        while self._expiry and (self._expiry[0][0] < now or len(self._expiry) > LOCAL_LIMIT):
            _, old = heapq.heappop(self._expiry)
            self._seen.pop(old, None)
        if signature in self._seen:
            return True
        self._seen[signature] = until
        heapq.heappush(self._expiry, (until, signature))
        return False

    async def first_time(self, signature: str, signed_at: int, *, across_replicas: bool = True) -> bool:
        """True the first time a signature is presented (anywhere, or only here); False for a replay. It is
        remembered until Slack's window counted from its signed timestamp has passed, not from its arrival."""
        now = self.clock()
        until = max(now, float(signed_at)) + self.valid + self.skew
        if self._seen_here(signature, now, until):
            return False
        return await self._first_across_replicas(signature, until - now) if across_replicas else True

    async def _first_across_replicas(self, signature: str, seconds: float) -> bool:
        try:
            first = await asyncio.wait_for(self.state.put_marker("REPLAY", signature, max(1, round(seconds))),
                                           SHARED_CHECK_BUDGET)
        except TimeoutError:
            log.warning("replay check on this replica only: the state table took over %.1fs", SHARED_CHECK_BUDGET)
            return True
        except Exception as e:  # botocore's errors and anything else: this replica's memory still holds
            log.warning("replay check on this replica only: the state table did not answer (%s)", error_code(e))
            return True
        if not first:
            log.warning("a replayed Slack request was refused")
        return first

    async def middleware(self, req: AsyncBoltRequest, next: Any) -> BoltResponse | None:
        """Bolt global middleware: it runs after Bolt verified the signature and its age. A replay to this
        replica is refused at once; requests that can change something are also claimed across replicas by
        the work after the ack (the ack waits for no table), which does nothing for a replay."""
        signature = (req.headers.get("x-slack-signature") or [""])[0]
        signed_at = (req.headers.get("x-slack-request-timestamp") or ["0"])[0]
        if signature:
            now = self.clock()
            until = max(now, float(signed_at if signed_at.isdigit() else 0)) + self.valid + self.skew
            if self._seen_here(signature, now, until):
                log.warning("a replayed Slack request was refused")
                return BoltResponse(status=401, body="this request was already received")
            if can_change(req.body):
                shared_claim.set(SharedClaim(self, signature, until - now))
        return await next()  # type: ignore[no-any-return]
