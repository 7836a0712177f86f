"""Pace this replica's Slack calls to Slack's published rate limits, most important first.

docs.slack.dev "Rate limits": methods are limited per minute by tier (Tier 2 about 20, Tier 3 about 50,
Tier 4 about 100), "with some allowance for bursts", and `chat.postMessage` to about one message per second
per channel. A busy hour then queues here instead of collecting 429s, and what people need first goes
first: a card's final state or its request for approval (URGENT), then a card's progress (PROGRESS), then
thread notes (NOTE). We pace a little under the published rates, since the replicas share one quota; what
still gets a 429 is retried by slack_sdk's handler after Retry-After. Modals are not paced: their
trigger_id lives only 3 seconds.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import time
from typing import Any

URGENT, PROGRESS, NOTE = 0, 1, 2
HEADROOM = 0.9  # of the published rate: the other replicas use the same quota
PER_MINUTE = {"chat.update": 50, "chat.delete": 50, "conversations.history": 50, "conversations.info": 50,
              "usergroups.users.list": 20, "users.info": 100, "chat.postEphemeral": 100,
              "chat.getPermalink": 100, "files.getUploadURLExternal": 100, "files.completeUploadExternal": 100}
POST_PER_SECOND = 1.0  # chat.postMessage, per channel
POST_BURST = 2.0

# the lane of the call in progress, for the 429 handler (it runs inside that call's task)
calling: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("calling", default=None)
# set by a caller that already waited for its slot (CardStore paces an edit before it renders the newest state)
already_paced: contextvars.ContextVar[bool] = contextvars.ContextVar("already_paced", default=False)


class _Lane:
    """A token bucket whose waiters are served by priority, then in arrival order."""

    def __init__(self, capacity: float, per_second: float) -> None:
        self.capacity, self.per_second = capacity, per_second
        self.tokens, self.at = capacity, time.monotonic()
        self.waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self.order = itertools.count()
        self.dispatcher: asyncio.Task[None] | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        if now < self.at:  # held after a 429: nothing accrues until Retry-After has passed
            return
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now

    def held_for(self) -> float:
        """Seconds left of a hold after a 429 (0 if none)."""
        return max(0.0, self.at - time.monotonic())

    async def acquire(self, priority: int) -> None:
        """Wait for a token."""
        self._refill()
        if not self.waiters and self.tokens >= 1 and not self.held_for():
            self.tokens -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiters, (priority, next(self.order), future))
        if self.dispatcher is None or self.dispatcher.done():
            self.dispatcher = asyncio.ensure_future(self._dispatch())
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted just as we were cancelled: give it back
                self.tokens = min(self.capacity, self.tokens + 1)
            raise

    def hold(self, seconds: float) -> None:
        """Slack said Retry-After: spend what is left and accrue nothing until then. The refused call retries
        at that moment; the next queued one follows a token's time later."""
        self._refill()
        self.tokens = min(self.tokens, 0.0)
        self.at = max(self.at, time.monotonic() + seconds)

    async def _dispatch(self) -> None:
        while self.waiters:
            self._refill()
            if self.tokens < 1 or self.held_for():
                await asyncio.sleep(self.held_for() + max(0.0, 1 - self.tokens) / self.per_second)
                continue
            _, _, future = heapq.heappop(self.waiters)
            if not future.done():  # a waiter that was cancelled gives its turn away
                self.tokens -= 1
                future.set_result(None)


class SlackPacer:
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale  # 1 against Slack; more only against a local workspace with raised limits (the soak)
        self._lanes: dict[tuple[str, str], _Lane] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> SlackPacer:
        # Bolt deep-copies each request, its client included, for lazy listeners: they must share this
        # replica's one pacer (a copy would pace them apart, and its waiters' futures cannot be copied)
        return self

    def _lane(self, method: str, channel: str) -> _Lane | None:
        key = (method, channel if method == "chat.postMessage" else "")
        lane = self._lanes.get(key)
        if lane is None:
            if method == "chat.postMessage":
                lane = _Lane(POST_BURST * self.scale, POST_PER_SECOND * HEADROOM * self.scale)
            elif method in PER_MINUTE:
                per_minute = PER_MINUTE[method] * HEADROOM * self.scale
                lane = _Lane(max(1.0, per_minute / 8), per_minute / 60)
            else:
                return None
            self._lanes[key] = lane
        return lane

    def spare(self, method: str, channel: str = "", keep: float = 2.0) -> bool:
        """Take a token now only if the lane has more than `keep` to spare and nobody waits: for edits that
        may be skipped when Slack is busy (a newer state will be shown anyway)."""
        lane = self._lane(method, channel)
        if lane is None:
            return True
        lane._refill()
        if lane.waiters or lane.tokens < keep + 1:
            return False
        lane.tokens -= 1
        return True

    def hold(self, method: str, channel: str, seconds: float) -> None:
        lane = self._lane(method, channel)
        if lane is not None:
            lane.hold(seconds)

    async def wait_out_hold(self, method: str, channel: str = "") -> None:
        """Right before a call goes out: a 429 heard since its token was taken holds it too."""
        lane = self._lane(method, channel)
        for _ in range(10):  # a hold may be extended by another 429 while we wait; then wait again
            wait = lane.held_for() if lane is not None else 0.0
            if not wait:
                return
            await asyncio.sleep(wait)

    async def slot(self, method: str, channel: str = "", priority: int = PROGRESS) -> None:
        lane = self._lane(method, channel)
        if lane is not None:
            await lane.acquire(priority)
