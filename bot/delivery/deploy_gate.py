"""Whether a deploy may go to an environment now: its lock and its freeze calendar.

Pure, and the one rule both sides apply: the bot before it starts a deploy, and the pipeline's Deploy
action before `helm` runs (a push to main or a start from the console never passes through the bot).
The pipeline lets a deploy through a lock or a freeze only with a grant the bot wrote for exactly that
execution: the lock holder's own deploy, or an approver breaking the glass with a reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.delivery.freeze_calendar import FreezeCalendar, FreezeState, in_words


@dataclass(frozen=True)
class EnvLock:
    """`/erp lock <env>`: who holds it, why, since and until when (epoch seconds)."""

    environment: str
    holder: str  # Slack user ID
    reason: str
    since: int
    until: int
    reminded: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # this lock, not the next one taken the same second

    def active(self, now: float) -> bool:
        return now < self.until

    def summary(self, now: float, calendar: FreezeCalendar | None = None,
                at: Callable[[int], str] | None = None, mention: Callable[[str], str] = lambda u: f"<@{u}>") -> str:
        """`prod is locked by <@U0A> since 14:03 (42m ago) until 16:03 UTC (in 1h 18m): "reason"`; times by
        `at`, else in the calendar's zone, else UTC."""
        def local(epoch: int) -> str:
            moment = datetime.fromtimestamp(epoch, UTC)
            return calendar.local(moment) if calendar is not None else moment.strftime("%a %d %b %H:%M UTC")
        at = at or local
        why = f': "{self.reason}"' if self.reason else " (no reason given)"
        return (f"{self.environment} is locked by {mention(self.holder)} since {at(self.since)}"
                f" ({in_words(timedelta(seconds=now - self.since))} ago) until {at(self.until)}"
                f" (in {in_words(timedelta(seconds=self.until - now))}){why}")

    def to_item(self) -> dict[str, Any]:
        return {"holder": self.holder, "reason": self.reason, "since": self.since, "until": self.until,
                "reminded": self.reminded, "lock_id": self.id}

    @classmethod
    def from_item(cls, environment: str, item: dict[str, Any]) -> EnvLock:
        return cls(environment, str(item["holder"]), str(item.get("reason", "")), int(item["since"]),
                   int(item["until"]), bool(item.get("reminded", False)), str(item.get("lock_id", "")))


@dataclass(frozen=True)
class DeployGrant:
    """What the bot allowed one execution past: the lock its requester held, a broken freeze."""

    execution_id: str
    requested_by: str
    lock_id: str | None = None  # the lock the holder deployed under
    break_glass: str | None = None  # the approver's reason
    broken_by: str | None = None
    # the broken glass lets this execution through this freeze only: "Retry stage" days later, in another
    # freeze, keeps the execution id, and must not ride the old reason (epoch seconds)
    glass_until: int | None = None

    def to_item(self) -> dict[str, Any]:
        return {"requested_by": self.requested_by, "lock_id": self.lock_id, "break_glass": self.break_glass,
                "broken_by": self.broken_by, "glass_until": self.glass_until}

    @classmethod
    def from_item(cls, execution_id: str, item: dict[str, Any]) -> DeployGrant:
        until = item.get("glass_until")
        return cls(execution_id, str(item.get("requested_by", "")), item.get("lock_id"), item.get("break_glass"),
                   item.get("broken_by"), int(until) if until is not None else None)

    def glass_holds(self, now: float) -> bool:
        return bool(self.break_glass) and self.glass_until is not None and now < self.glass_until


def freeze_summary(env: str, calendar: FreezeCalendar, state: FreezeState, now: datetime) -> str:
    """`prod is frozen (weekend) until Mon 07 Dec 09:00 KST (in 14h 2m)`."""
    if state.opens_at is None:
        return f"{env} is frozen ({state.window}) for at least the next 60 days"
    return (f"{env} is frozen ({state.window}) until {calendar.local(state.opens_at)}"
            f" (in {in_words(state.opens_at - now)})")


def pipeline_refusal(env: str, lock: EnvLock | None, calendar: FreezeCalendar | None,
                     grant: DeployGrant | None, now: datetime) -> str | None:
    """Why the Deploy action must not run `helm` for this execution, or None."""
    epoch = now.timestamp()
    if lock is not None and lock.active(epoch):
        held_by_requester = grant is not None and grant.lock_id == lock.id \
            and grant.requested_by == lock.holder
        if not held_by_requester:
            # plain IDs: the build's lines reach the thread as text, never as live mentions
            return lock.summary(epoch, calendar, mention=lambda u: f"Slack user {u}") \
                + ". Only the holder's own `/erp deploy` goes through."
    if calendar is not None:
        state = calendar.state_at(now)
        if state.frozen and not (grant is not None and grant.glass_holds(epoch)):
            return (freeze_summary(env, calendar, state, now)
                    + ". An approver can break the glass: `/erp deploy <service> " + env + " break-glass <reason>`.")
    return None


# Where each lives in the state table; the bot writes them, the pipeline's Deploy role may only read them.
def lock_key(env: str) -> dict[str, str]:
    return {"pk": f"LOCK#{env}", "sk": "CURRENT"}


def rules_key(env: str) -> dict[str, str]:
    """The freeze calendar the bot published from its config, for the pipeline (which cannot read the config)."""
    return {"pk": f"RULES#{env}", "sk": "FREEZE"}


def grant_key(env: str, execution_id: str) -> dict[str, str]:
    return {"pk": f"GRANT#{env}", "sk": f"EXEC#{execution_id}"}
