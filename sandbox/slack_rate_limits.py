"""Slack's published Web API rate limits, enforced by the local workspace.

From docs.slack.dev "Rate limits": each method belongs to a tier, counted per method, per app, per
workspace, per minute, "with some allowance for bursts"; `chat.postMessage` has its own limit of
"1 message per second per channel", also with short bursts. Over a limit Slack answers HTTP 429 with
`Retry-After` (seconds) and `{"ok": false, "error": "ratelimited"}`. Each method's tier is on its
reference page (docs.slack.dev/reference/methods/<method>, "Rate limits").

Slack does not publish burst sizes; a bucket here holds a sixth of a minute's calls (at least 1), and
`chat.postMessage` 3 per channel: at least as strict as Slack in practice. `scale` multiplies every rate,
for runs that test correctness with more traffic than one real workspace could carry (the soak).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
METHOD_TIER = {
    "chat.update": 3, "chat.delete": 3, "conversations.history": 3, "conversations.info": 3,
    "usergroups.users.list": 2, "users.info": 4, "chat.postEphemeral": 4, "chat.getPermalink": 4,
    "views.open": 4, "views.update": 4, "files.getUploadURLExternal": 4, "files.completeUploadExternal": 4,
    "auth.test": 4,
}
POST_PER_SECOND_PER_CHANNEL = 1.0
POST_BURST = 3


@dataclass
class Bucket:
    capacity: float
    per_second: float
    tokens: float
    at: float

    def take(self, now: float) -> float:
        """0 if a call may go now (and count it); else the seconds until it may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class RateLimits:
    def __init__(self, scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.scale = scale
        self.clock = clock
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.limited: list[tuple[str, str]] = []  # (method, channel) of each 429, for tests and the bench

    def _bucket(self, method: str, channel: str) -> Bucket | None:
        key = (method, channel if method == "chat.postMessage" else "")
        if key not in self.buckets:
            if method == "chat.postMessage":
                rate, burst = POST_PER_SECOND_PER_CHANNEL * self.scale, POST_BURST * self.scale
            elif method in METHOD_TIER:
                per_minute = TIER_PER_MINUTE[METHOD_TIER[method]] * self.scale
                rate, burst = per_minute / 60, max(1.0, per_minute / 6)
            else:
                return None
            self.buckets[key] = Bucket(capacity=burst, per_second=rate, tokens=burst, at=self.clock())
        return self.buckets[key]

    def retry_after(self, method: str, channel: str = "") -> int | None:
        """None if the call may go now; else Slack's Retry-After, whole seconds."""
        bucket = self._bucket(method, channel)
        if bucket is None:
            return None
        wait = bucket.take(self.clock())
        if wait <= 0:
            return None
        self.limited.append((method, channel))
        return max(1, math.ceil(wait))
