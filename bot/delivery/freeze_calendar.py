"""Freeze windows: when an environment takes no deploys, in its own time zone.

Declared per environment in the config (README "Freeze windows"):

    freeze:
      timezone: Asia/Seoul
      mode: deny                 # deny: no deploys inside the windows; allow: deploys only inside them
      windows:
        - {name: weekend, from: "Fri 18:00", to: "Mon 09:00"}          # every week, local wall-clock time
        - {name: new year, date: "2027-01-01"}                       # one whole local day
        - {name: launch, from: "2026-12-24 18:00", to: "2026-12-26 09:00"}  # one span

Times are local wall-clock times in `timezone` (zoneinfo), so "Mon 09:00" stays 09:00 across daylight
saving changes. Pure: the caller passes the time. The same code runs in the bot (`/erp deploy`,
`/erp freeze`) and in the pipeline's Deploy action (bot/ci/build_steps.py), which reads the calendar the
bot published from its config.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKLY = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+(\d{1,2}):(\d{2})$", re.IGNORECASE)
_LOCAL = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{1,2}):(\d{2})$")
HORIZON = timedelta(days=60)  # how far ahead a window is looked for


class FreezeConfigError(ValueError):
    """What is wrong with a freeze declaration, in words (the config loader adds the file and key)."""


@dataclass(frozen=True)
class Interval:
    start: datetime  # aware, UTC
    end: datetime
    name: str


def _clock(hour: str, minute: str, what: str) -> tuple[time, int]:
    """(time of day, days to add): "24:00" is the next day's 00:00, so windows that touch merge."""
    h, m = int(hour), int(minute)
    if h == 24 and m == 0:
        return time(0), 1
    if not (0 <= h < 24 and 0 <= m < 60):
        raise FreezeConfigError(f"{what}: {hour}:{minute} is not a time of day")
    return time(h, m), 0


def _instant(day: date, clock: time, tz: ZoneInfo, *, earliest: bool) -> datetime:
    """The UTC instant a local wall-clock time names. Twice on the night clocks go back: the earlier or the
    later one, as asked. Never on the night they go forward: the moment the clock jumps past it."""
    naive = datetime.combine(day, clock)
    real = [t for t in (naive.replace(tzinfo=tz, fold=0).astimezone(UTC), naive.replace(tzinfo=tz, fold=1)
                        .astimezone(UTC)) if t.astimezone(tz).replace(tzinfo=None) == naive]
    if real:
        return min(real) if earliest else max(real)
    low, high = sorted(naive.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))
    while high - low > timedelta(seconds=1):  # the offset changes once between them: find when
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0)


@dataclass(frozen=True)
class FreezeWindow:
    """One declared window: weekly (`from`/`to` with weekdays), one `date`, or one span of local times."""

    name: str
    kind: str  # weekly | date | span
    raw: dict[str, str]

    @classmethod
    def parse(cls, raw: Any, index: int) -> FreezeWindow:
        if not isinstance(raw, dict):
            raise FreezeConfigError(f"windows[{index}]: expected a mapping such as "
                                    '{name: weekend, from: "Fri 18:00", to: "Mon 09:00"}')
        unknown = set(raw) - {"name", "from", "to", "date"}
        if unknown:
            raise FreezeConfigError(f"windows[{index}]: unknown key {sorted(unknown)[0]!r}, expected name, from, to"
                                    " or date")
        values = {str(k): str(v) for k, v in raw.items()}
        name = values.get("name") or f"window {index + 1}"
        if "date" in values:
            if "from" in values or "to" in values:
                raise FreezeConfigError(f"windows[{index}]: a window has either date, or from and to")
            try:
                date.fromisoformat(values["date"])
            except ValueError:
                raise FreezeConfigError(f"windows[{index}].date: expected a date such as 2026-12-25, got"
                                        f" {values['date']!r}") from None
            return cls(name, "date", values)
        if "from" not in values or "to" not in values:
            raise FreezeConfigError(f"windows[{index}]: expected from and to (\"Fri 18:00\"), or a date")
        start, end = values["from"].strip(), values["to"].strip()
        if _WEEKLY.match(start) and _WEEKLY.match(end):
            for key, text in (("from", start), ("to", end)):
                m = _WEEKLY.match(text)
                assert m is not None
                _clock(m.group(2), m.group(3), f"windows[{index}].{key}")
            return cls(name, "weekly", values)
        if _LOCAL.match(start) and _LOCAL.match(end):
            window = cls(name, "span", values)
            s, e = window._span(ZoneInfo("UTC"))  # in UTC: its order does not depend on the zone's offsets
            if e <= s:
                raise FreezeConfigError(f"windows[{index}]: to ({end}) is not after from ({start})")
            return window
        raise FreezeConfigError(f"windows[{index}]: from and to must both be weekly times such as \"Fri 18:00\","
                                f" or both local times such as \"2026-12-24 18:00\"; got {start!r} and {end!r}")

    def _span(self, tz: ZoneInfo, widest: bool = True) -> tuple[datetime, datetime]:
        out = []
        for key in ("from", "to"):
            m = _LOCAL.match(self.raw[key].strip())
            assert m is not None
            clock, extra = _clock(m.group(2), m.group(3), key)
            day = date.fromisoformat(m.group(1)) + timedelta(days=extra)
            out.append(_instant(day, clock, tz, earliest=(key == "from") == widest))
        return out[0], out[1]

    def occurrences(self, tz: ZoneInfo, start: datetime, end: datetime, widest: bool = True) -> Iterator[Interval]:
        """Every occurrence that overlaps [start, end), in UTC. Where a wall-clock time is ambiguous (clocks
        going back), `widest` takes the earlier start and the later end (a freeze); else the narrower."""
        def emit(s: datetime, e: datetime) -> Iterator[Interval]:
            if s < end and e > start and e > s:
                yield Interval(s, e, self.name)

        def at(day: date, clock: time, is_start: bool) -> datetime:
            return _instant(day, clock, tz, earliest=is_start == widest)

        if self.kind == "date":
            day = date.fromisoformat(self.raw["date"])
            yield from emit(at(day, time(0), True), at(day + timedelta(days=1), time(0), False))
            return
        if self.kind == "span":
            yield from emit(*self._span(tz, widest))
            return
        m_from, m_to = _WEEKLY.match(self.raw["from"].strip()), _WEEKLY.match(self.raw["to"].strip())
        assert m_from is not None and m_to is not None
        from_day, to_day = DAYS.index(m_from.group(1)[:3].lower()), DAYS.index(m_to.group(1)[:3].lower())
        from_time, from_extra = _clock(m_from.group(2), m_from.group(3), "from")
        to_time, to_extra = _clock(m_to.group(2), m_to.group(3), "to")
        length = (to_day - from_day) % 7
        if length == 0 and (to_extra, to_time) <= (from_extra, from_time):  # "Fri 24:00" is after "Fri 18:00"
            length = 7
        day = start.astimezone(tz).date() - timedelta(days=8)
        last = end.astimezone(tz).date() + timedelta(days=1)
        while day <= last:
            if day.weekday() == from_day:
                # wall-clock times in the zone: "09:00" stays 09:00 whatever the offset that day
                yield from emit(at(day + timedelta(days=from_extra), from_time, True),
                                at(day + timedelta(days=length + to_extra), to_time, False))
            day += timedelta(days=1)


@dataclass(frozen=True)
class FreezeState:
    frozen: bool
    window: str | None = None  # the name of the window that freezes it (deny), or None
    opens_at: datetime | None = None  # when deploys are possible again; None: not within the horizon
    closes_at: datetime | None = None  # while open: when the next freeze starts, if within the horizon


@dataclass(frozen=True)
class FreezeCalendar:
    timezone: str
    mode: str  # deny | allow
    windows: tuple[FreezeWindow, ...]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def parse(cls, raw: Any) -> FreezeCalendar:
        if not isinstance(raw, dict):
            raise FreezeConfigError("expected a mapping with timezone, mode and windows")
        unknown = set(raw) - {"timezone", "mode", "windows"}
        if unknown:
            raise FreezeConfigError(f"unknown key {sorted(unknown)[0]!r}, expected timezone, mode or windows")
        tz = str(raw.get("timezone", "UTC"))
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise FreezeConfigError(f"timezone: {tz!r} is not an IANA time zone such as Asia/Seoul") from None
        mode = str(raw.get("mode", "deny"))
        if mode not in ("deny", "allow"):
            raise FreezeConfigError(f"mode: expected deny or allow, got {mode!r}")
        windows = raw.get("windows")
        if not isinstance(windows, list) or not windows:
            raise FreezeConfigError("windows: expected a list of windows")
        return cls(tz, mode, tuple(FreezeWindow.parse(w, i) for i, w in enumerate(windows)))

    def to_dict(self) -> dict[str, Any]:
        """The declaration as written, for the pipeline to read back with `parse`."""
        return {"timezone": self.timezone, "mode": self.mode, "windows": [dict(w.raw) for w in self.windows]}

    def frozen_intervals(self, now: datetime, horizon: timedelta = HORIZON) -> list[Interval]:
        """The frozen periods overlapping [now - 8 days, now + horizon], merged where they touch."""
        start, end = now - timedelta(days=8), now + horizon
        # deny: a freeze as wide as its wall-clock times can mean; allow: a deploy window as narrow
        found = sorted((i for w in self.windows for i in w.occurrences(self.zone, start, end, self.mode == "deny")),
                       key=lambda i: i.start)
        merged: list[Interval] = []
        for i in found:
            if merged and i.start <= merged[-1].end:
                last = merged[-1]
                name = last.name if i.name in last.name.split(", ") else f"{last.name}, {i.name}"
                merged[-1] = Interval(last.start, max(last.end, i.end), name)
            else:
                merged.append(i)
        if self.mode == "deny":
            return merged
        # allow: frozen everywhere the windows are not
        gaps, cursor = [], start
        for i in merged:
            if i.start > cursor:
                gaps.append(Interval(cursor, i.start, "outside the deploy windows"))
            cursor = max(cursor, i.end)
        if cursor < end:
            gaps.append(Interval(cursor, end + timedelta(days=3650), "outside the deploy windows"))
        return gaps

    def state_at(self, now: datetime) -> FreezeState:
        intervals = self.frozen_intervals(now)
        for i in intervals:
            if i.start <= now < i.end:
                opens = i.end if i.end <= now + HORIZON else None
                return FreezeState(True, i.name, opens_at=opens)
        upcoming = [i for i in intervals if i.start > now]
        return FreezeState(False, closes_at=upcoming[0].start if upcoming else None)

    def upcoming(self, now: datetime, count: int = 3) -> list[Interval]:
        return [i for i in self.frozen_intervals(now) if i.end > now][:count]

    def local(self, moment: datetime) -> str:
        """`Mon 09:00 KST` style, in the calendar's zone."""
        return moment.astimezone(self.zone).strftime("%a %d %b %H:%M %Z")


def in_words(delta: timedelta) -> str:
    """`3h 20m`, `2d 4h`, `45m`: for people reading on a phone."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m"
