"""Freeze windows against fixed clocks: time zones, daylight saving, holidays, allow and deny."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.delivery.deploy_gate import DeployGrant, EnvLock, pipeline_refusal
from bot.delivery.freeze_calendar import FreezeCalendar, FreezeConfigError, in_words

SEOUL = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")


def calendar(tz: str, *windows: dict[str, str], mode: str = "deny") -> FreezeCalendar:
    return FreezeCalendar.parse({"timezone": tz, "mode": mode, "windows": list(windows)})


WEEKEND = {"name": "weekend", "from": "Fri 18:00", "to": "Mon 09:00"}


def test_a_weekly_window_is_read_in_its_own_time_zone():
    seoul = calendar("Asia/Seoul", WEEKEND)
    # Friday 2026-12-04 17:59 in Seoul is 08:59 UTC: still open; 18:00 Seoul (09:00 UTC) frozen
    assert not seoul.state_at(datetime(2026, 12, 4, 17, 59, tzinfo=SEOUL)).frozen
    state = seoul.state_at(datetime(2026, 12, 4, 18, 0, tzinfo=SEOUL))
    assert state.frozen and state.window == "weekend"
    assert state.opens_at == datetime(2026, 12, 7, 9, 0, tzinfo=SEOUL)
    assert seoul.local(state.opens_at) == "Mon 07 Dec 09:00 KST"
    # the same UTC instant is Friday morning in New York: not frozen there
    assert not calendar("America/New_York", WEEKEND).state_at(datetime(2026, 12, 4, 9, 0, tzinfo=UTC)).frozen


def test_daylight_saving_keeps_the_wall_clock_times():
    """US clocks went back on Sunday 2026-11-01: the weekend window (63 wall-clock hours) is 64 hours long, and it still opens at
    09:00 local on Monday (14:00 UTC, not 13:00)."""
    ny = calendar("America/New_York", WEEKEND)
    friday = datetime(2026, 10, 30, 18, 0, tzinfo=NEW_YORK)
    assert friday.astimezone(UTC).hour == 22  # EDT, UTC-4
    state = ny.state_at(friday)
    assert state.frozen and state.opens_at == datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    assert (state.opens_at - friday).total_seconds() == 64 * 3600
    assert ny.state_at(datetime(2026, 11, 2, 13, 59, tzinfo=UTC)).frozen
    assert not ny.state_at(datetime(2026, 11, 2, 14, 0, tzinfo=UTC)).frozen
    # and in spring (2027-03-14, clocks forward) it is 62 hours
    spring = ny.state_at(datetime(2027, 3, 12, 18, 0, tzinfo=NEW_YORK))
    assert spring.opens_at is not None
    assert (spring.opens_at - datetime(2027, 3, 12, 18, 0, tzinfo=NEW_YORK)).total_seconds() == 62 * 3600


def test_a_freeze_covers_the_hour_clocks_skip_and_the_hour_they_repeat():
    """Review finding: a window from "Sun 02:30" on the night US clocks jump from 02:00 to 03:00 opened at
    03:30 (fold=0 read 02:30 as EST), leaving 03:00-03:30 open; an end at 01:30 on the night they go back
    took the first 01:30, leaving the repeated hour open. A freeze starts when the clock jumps past its
    start and ends at the last time its end is read."""
    gap = calendar("America/New_York", {"name": "maintenance", "from": "Sun 02:30", "to": "Sun 05:00"})
    assert gap.state_at(datetime(2026, 3, 8, 7, 0, tzinfo=UTC)).frozen  # 03:00 EDT, the jump
    assert gap.state_at(datetime(2026, 3, 8, 7, 15, tzinfo=UTC)).frozen
    assert not gap.state_at(datetime(2026, 3, 8, 6, 59, tzinfo=UTC)).frozen  # 01:59 EST
    overlap = calendar("America/New_York", {"name": "batch", "from": "Sun 00:00", "to": "Sun 01:30"})
    assert overlap.state_at(datetime(2026, 11, 1, 6, 29, tzinfo=UTC)).frozen  # the second 01:29 (EST)
    assert not overlap.state_at(datetime(2026, 11, 1, 6, 30, tzinfo=UTC)).frozen
    # an allow window is read the narrow way: it opens at its later start
    allowed = calendar("America/New_York", {"name": "window", "from": "Sun 01:30", "to": "Sun 04:00"}, mode="allow")
    assert allowed.state_at(datetime(2026, 11, 1, 5, 45, tzinfo=UTC)).frozen  # the first 01:45 (EDT)
    assert not allowed.state_at(datetime(2026, 11, 1, 6, 45, tzinfo=UTC)).frozen  # the second (EST)


def test_24_00_is_the_next_midnight_so_touching_windows_merge():
    days = calendar("UTC", {"name": "saturday", "from": "Sat 00:00", "to": "Sat 24:00"},
                    {"name": "sunday", "from": "Sun 00:00", "to": "Sun 24:00"})
    state = days.state_at(datetime(2026, 12, 5, 12, 0, tzinfo=UTC))
    assert state.frozen and state.opens_at == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    assert state.window == "saturday, sunday"
    assert days.state_at(datetime(2026, 12, 5, 23, 59, 59, 999999, tzinfo=UTC)).frozen
    # a same-day window to 24:00 is that evening, not a week-long one (review: it froze for good)
    evening = calendar("UTC", {"name": "evening", "from": "Fri 18:00", "to": "Fri 24:00"})
    assert not evening.state_at(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)).frozen
    friday = evening.state_at(datetime(2026, 3, 13, 20, 0, tzinfo=UTC))
    assert friday.frozen and friday.opens_at == datetime(2026, 3, 14, 0, 0, tzinfo=UTC)


def test_a_holiday_is_the_whole_local_day_and_joins_a_window_next_to_it():
    seoul = calendar("Asia/Seoul", WEEKEND, {"name": "Christmas", "date": "2026-12-25"})
    # Christmas 2026 is a Friday: frozen from Thursday midnight, through the weekend, to Monday 09:00
    state = seoul.state_at(datetime(2026, 12, 25, 0, 0, tzinfo=SEOUL))
    assert state.frozen and state.window == "Christmas, weekend"
    assert state.opens_at == datetime(2026, 12, 28, 9, 0, tzinfo=SEOUL)
    assert not seoul.state_at(datetime(2026, 12, 24, 23, 59, tzinfo=SEOUL)).frozen
    # the day before, it says when the next freeze starts
    assert seoul.state_at(datetime(2026, 12, 24, 12, 0, tzinfo=SEOUL)).closes_at == \
        datetime(2026, 12, 25, 0, 0, tzinfo=SEOUL)


def test_allow_mode_freezes_everything_outside_its_windows():
    office = calendar("Asia/Seoul", {"name": "office hours", "from": "Tue 10:00", "to": "Tue 16:00"},
                      {"name": "office hours", "from": "Thu 10:00", "to": "Thu 16:00"}, mode="allow")
    wednesday = datetime(2026, 12, 2, 12, 0, tzinfo=SEOUL)
    state = office.state_at(wednesday)
    assert state.frozen and state.opens_at == datetime(2026, 12, 3, 10, 0, tzinfo=SEOUL)
    inside = office.state_at(datetime(2026, 12, 3, 15, 59, tzinfo=SEOUL))
    assert not inside.frozen and inside.closes_at == datetime(2026, 12, 3, 16, 0, tzinfo=SEOUL)


def test_a_one_off_span_and_the_next_windows():
    seoul = calendar("Asia/Seoul", WEEKEND, {"name": "launch", "from": "2026-12-09 18:00", "to": "2026-12-10 09:00"})
    upcoming = seoul.upcoming(datetime(2026, 12, 2, 12, 0, tzinfo=SEOUL))
    assert [(i.name, i.start.astimezone(SEOUL).strftime("%a %H:%M")) for i in upcoming] == [
        ("weekend", "Fri 18:00"), ("launch", "Wed 18:00"), ("weekend", "Fri 18:00")]


@pytest.mark.parametrize(("raw", "says"), [
    ({"timezone": "Asia/Seol", "windows": [WEEKEND]}, "not an IANA time zone"),
    ({"timezone": "UTC", "mode": "block", "windows": [WEEKEND]}, "expected deny or allow"),
    ({"timezone": "UTC", "windows": [{"from": "Fri 25:00", "to": "Mon 09:00"}]}, "not a time of day"),
    ({"timezone": "UTC", "windows": [{"from": "Fri 18:00", "to": "2026-12-01 09:00"}]}, "must both be weekly"),
    ({"timezone": "UTC", "windows": [{"date": "2026-13-01"}]}, "expected a date"),
    ({"timezone": "UTC", "windows": [{"from": "2026-12-02 10:00", "to": "2026-12-01 10:00"}]}, "is not after"),
    ({"timezone": "UTC", "windows": []}, "a list of windows"),
])
def test_a_bad_declaration_says_what_to_write(raw: dict[str, object], says: str):
    with pytest.raises(FreezeConfigError, match=says):
        FreezeCalendar.parse(raw)


def test_the_pipeline_gate_lets_only_the_holder_and_a_broken_glass_through():
    now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    lock = EnvLock("prod", "U0DEV1", "INC-42 payments down", int(now.timestamp()) - 600, int(now.timestamp()) + 3600)
    why = pipeline_refusal("prod", lock, None, None, now)
    assert why is not None and "locked by Slack user U0DEV1" in why and "INC-42" in why and "10m ago" in why
    holder = DeployGrant("e1", "U0DEV1", lock_id=lock.id)
    assert pipeline_refusal("prod", lock, None, holder, now) is None
    # a grant made under an earlier lock does not open a later one
    assert pipeline_refusal("prod", lock, None, DeployGrant("e1", "U0DEV1", lock_id="an-earlier-lock"), now)
    expired = EnvLock("prod", "U0DEV1", "", lock.since, int(now.timestamp()) - 1)
    assert pipeline_refusal("prod", expired, None, None, now) is None
    frozen = calendar("UTC", {"name": "all day", "date": "2026-12-02"})
    why = pipeline_refusal("prod", None, frozen, holder, now)
    assert why is not None and "frozen (all day) until Thu 03 Dec 00:00 UTC (in 21h)" in why
    glass = DeployGrant("e1", "U0APPR1", break_glass="hotfix", glass_until=int(now.timestamp()) + 3600)
    assert pipeline_refusal("prod", None, frozen, glass, now) is None
    # the broken glass is for that freeze: a retry of the same execution a day later is refused again
    assert pipeline_refusal("prod", None, frozen, glass, now + timedelta(hours=2)) is not None
    assert pipeline_refusal("prod", None, frozen, DeployGrant("e1", "U0APPR1", break_glass="hotfix"), now)


def test_durations_read_well_on_a_phone():
    from datetime import timedelta
    assert [in_words(timedelta(minutes=m)) for m in (0, 45, 60, 200, 1440, 1500)] == \
        ["0m", "45m", "1h", "3h 20m", "1d", "1d 1h"]
