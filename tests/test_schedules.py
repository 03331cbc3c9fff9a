"""Tests for pyscheduler.schedules: cron (with DST), interval, once, latest_due, descriptions."""

from __future__ import annotations

import copy
import json
import pickle
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyscheduler._time import from_ms, to_ms
from pyscheduler.errors import InvalidScheduleError
from pyscheduler.schedules import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    latest_due,
    latest_due_ms,
    schedule_from_description,
)

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # moves its clocks by 30 minutes


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def chain(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    current = start
    for _ in range(count):
        following = schedule.next_after(current)
        assert following is not None
        assert following > current
        out.append(following)
        current = following
    return out


def walls(instants: list[datetime], zone: ZoneInfo) -> list[str]:
    return [instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S%z") for instant in instants]


# --------------------------------------------------------------------------------------------
# Cron basics


def test_every_five_minutes() -> None:
    schedule = CronSchedule("*/5 * * * *")

    assert chain(schedule, utc(2026, 1, 1, 0, 3), 3) == [
        utc(2026, 1, 1, 0, 5),
        utc(2026, 1, 1, 0, 10),
        utc(2026, 1, 1, 0, 15),
    ]


def test_next_after_is_strictly_after_an_occurrence() -> None:
    schedule = CronSchedule("0 * * * *")

    assert schedule.next_after(utc(2026, 1, 1, 5)) == utc(2026, 1, 1, 6)
    assert schedule.next_after(utc(2026, 1, 1, 5, 59, 59, 999999)) == utc(2026, 1, 1, 6)


def test_results_are_utc_aware() -> None:
    result = CronSchedule("0 9 * * *", "Asia/Tokyo").next_after(utc(2025, 12, 31, 12))

    assert result is not None
    assert result.tzinfo is UTC
    assert result == utc(2026, 1, 1, 0)


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # names: Mondays in January (2026-01-05 is a Monday)
        ("0 12 * JAN MON", utc(2026, 1, 1), [utc(2026, 1, 5, 12), utc(2026, 1, 12, 12)]),
        ("0 12 * jan mon", utc(2026, 1, 1), [utc(2026, 1, 5, 12), utc(2026, 1, 12, 12)]),
        # ranges with steps and lists
        ("10-20/5 3,4 * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 3, 10), utc(2026, 1, 1, 3, 15)]),
        ("0 9 * * MON-FRI", utc(2026, 1, 2, 10), [utc(2026, 1, 5, 9), utc(2026, 1, 6, 9)]),
        ("0 0 1,15 * *", utc(2026, 1, 2), [utc(2026, 1, 15), utc(2026, 2, 1)]),
        ("0 0 * FEB-MAR/1 *", utc(2026, 3, 31, 1), [utc(2027, 2, 1), utc(2027, 2, 2)]),
        # 7 and 0 are both Sunday (2026-01-04 is a Sunday)
        ("0 0 * * 7", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),
        ("0 0 * * 0", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),
        ("0 0 * * 5-7", utc(2026, 1, 1), [utc(2026, 1, 2), utc(2026, 1, 3), utc(2026, 1, 4)]),
        # a range with low > high wraps round: Saturday to Monday
        ("0 0 * * SAT-MON", utc(2026, 1, 1), [utc(2026, 1, 3), utc(2026, 1, 4), utc(2026, 1, 5)]),
        ("0 22-1 * * *", utc(2026, 1, 1, 2), [utc(2026, 1, 1, 22), utc(2026, 1, 1, 23)]),
        # an equal range is that one value (croniter alone reads "5-5" as every minute)
        ("5-5 * * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 1, 5)]),
        # "a/step" runs from a to the top of the field
        ("50/5 * * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 0, 50), utc(2026, 1, 1, 0, 55)]),
        # both day fields restricted: either one matching fires (the 13th, or a Friday)
        ("0 0 13 * 5", utc(2026, 1, 1), [utc(2026, 1, 2), utc(2026, 1, 9), utc(2026, 1, 13)]),
        # L, ? and the nth weekday
        ("0 0 L * ?", utc(2026, 1, 1), [utc(2026, 1, 31), utc(2026, 2, 28)]),
        ("0 0 ? * MON#2", utc(2026, 1, 1), [utc(2026, 1, 12), utc(2026, 2, 9)]),
        # leap days
        ("0 0 29 2 *", utc(2026, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
    ],
)
def test_cron_syntax(expr: str, start: datetime, expected: list[datetime]) -> None:
    assert chain(CronSchedule(expr), start, len(expected)) == expected


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@yearly", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@annually", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@monthly", [utc(2026, 2, 1), utc(2026, 3, 1)]),
        ("@weekly", [utc(2026, 1, 18), utc(2026, 1, 25)]),  # Sundays
        ("@daily", [utc(2026, 1, 16), utc(2026, 1, 17)]),
        ("@midnight", [utc(2026, 1, 16), utc(2026, 1, 17)]),
        ("@hourly", [utc(2026, 1, 15, 11), utc(2026, 1, 15, 12)]),
        ("@DAILY", [utc(2026, 1, 16), utc(2026, 1, 17)]),
    ],
)
def test_macros(macro: str, expected: list[datetime]) -> None:
    assert chain(CronSchedule(macro), utc(2026, 1, 15, 10, 30), 2) == expected


def test_six_fields_have_leading_seconds() -> None:
    # Given a six-field expression, the first field is the second
    every_ten = CronSchedule("*/10 * * * * *")
    at_thirty = CronSchedule("30 0 12 * * *")

    assert chain(every_ten, utc(2026, 1, 1, 0, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 0, 10),
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 30),
    ]
    assert chain(at_thirty, utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 12, 0, 30),
        utc(2026, 1, 2, 12, 0, 30),
    ]


def test_agrees_with_a_minute_by_minute_scan() -> None:
    # Given expressions whose fields are easy to check by hand
    cases: dict[str, Callable[[datetime], bool]] = {
        "*/7 1-3,22 * * *": lambda d: d.minute % 7 == 0 and d.hour in (1, 2, 3, 22),
        "0 0 * * 1-5": lambda d: (d.minute, d.hour) == (0, 0) and d.isoweekday() <= 5,
        "15 */6 1-7 * *": lambda d: d.minute == 15 and d.hour % 6 == 0 and d.day <= 7,
    }
    start = utc(2026, 2, 25)
    for expr, matches in cases.items():
        # When listing a few days of occurrences
        found = [x for x in chain(CronSchedule(expr), start, 400) if x < start + timedelta(days=9)]
        # Then they are exactly the minutes that match
        expected = [
            start + timedelta(minutes=m)
            for m in range(1, 9 * 24 * 60)
            if matches(start + timedelta(minutes=m))
        ]
        assert found == expected, expr


# --------------------------------------------------------------------------------------------
# Time zones and DST


def test_evaluated_in_its_time_zone_by_season() -> None:
    schedule = CronSchedule("0 9 * * *", "Europe/Berlin")

    assert schedule.next_after(utc(2026, 1, 15)) == utc(2026, 1, 15, 8)  # CET, UTC+1
    assert schedule.next_after(utc(2026, 7, 15)) == utc(2026, 7, 15, 7)  # CEST, UTC+2
    assert schedule.tz == BERLIN
    assert schedule.tz_name == "Europe/Berlin"


def test_tz_may_be_a_tzinfo() -> None:
    by_object = CronSchedule("0 9 * * *", BERLIN)
    fixed = CronSchedule("0 9 * * *", timezone(timedelta(hours=-3)))

    assert by_object == CronSchedule("0 9 * * *", "Europe/Berlin")
    assert by_object.next_after(utc(2026, 1, 15)) == utc(2026, 1, 15, 8)
    assert fixed.next_after(utc(2026, 1, 15)) == utc(2026, 1, 15, 12)
    assert CronSchedule("* * * * *", UTC) == CronSchedule("* * * * *")


def test_spring_forward_runs_once_at_the_end_of_the_gap() -> None:
    # Given a daily 02:30 job in New York, where 2026-03-08 02:00-03:00 does not exist
    schedule = CronSchedule("30 2 * * *", "America/New_York")

    # When listing its runs around that day
    runs = chain(schedule, utc(2026, 3, 7), 3)

    # Then it runs once on the day, at 03:00 EDT (07:00 UTC), and at 02:30 the next day
    assert walls(runs, NEW_YORK) == [
        "2026-03-07 02:30:00-0500",
        "2026-03-08 03:00:00-0400",
        "2026-03-09 02:30:00-0400",
    ]
    assert runs[1] == utc(2026, 3, 8, 7)


def test_spring_forward_several_matches_in_the_gap_run_once() -> None:
    schedule = CronSchedule("*/20 2 * * *", "America/New_York")

    runs = chain(schedule, utc(2026, 3, 7, 8), 2)

    assert walls(runs, NEW_YORK) == ["2026-03-08 03:00:00-0400", "2026-03-09 02:00:00-0400"]


def test_spring_forward_skips_the_gap_for_every_hour_jobs() -> None:
    schedule = CronSchedule("*/15 * * * *", "America/New_York")

    runs = chain(schedule, utc(2026, 3, 8, 6, 40), 3)

    assert walls(runs, NEW_YORK) == [
        "2026-03-08 01:45:00-0500",
        "2026-03-08 03:00:00-0400",
        "2026-03-08 03:15:00-0400",
    ]


def test_fall_back_fixed_hour_runs_once() -> None:
    # Given 01:30 daily in New York, where 01:00-02:00 happens twice on 2026-11-01
    schedule = CronSchedule("30 1 * * *", "America/New_York")

    runs = chain(schedule, utc(2026, 10, 31, 12), 2)

    # Then it runs at the first pass only, then on the next day
    assert walls(runs, NEW_YORK) == ["2026-11-01 01:30:00-0400", "2026-11-02 01:30:00-0500"]
    # And asking from inside the second pass does not run it again
    assert schedule.next_after(utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 2, 6, 30)


def test_fall_back_every_hour_job_runs_through_both_passes() -> None:
    schedule = CronSchedule("*/15 * * * *", "America/New_York")

    runs = chain(schedule, utc(2026, 11, 1, 4, 50), 12)

    # Then the UTC instants are strictly increasing and 15 minutes apart
    assert runs == [utc(2026, 11, 1, 5) + timedelta(minutes=15 * k) for k in range(12)]
    assert walls(runs, NEW_YORK)[3:6] == [
        "2026-11-01 01:45:00-0400",
        "2026-11-01 01:00:00-0500",
        "2026-11-01 01:15:00-0500",
    ]


def test_fall_back_from_inside_the_first_pass() -> None:
    hourly_quarter = CronSchedule("10 * * * *", "America/New_York")

    # 01:40 EDT: the rest of the first pass has nothing, the second pass has 01:10 EST
    assert hourly_quarter.next_after(utc(2026, 11, 1, 5, 40)) == utc(2026, 11, 1, 6, 10)
    # 01:05 EDT: 01:10 EDT comes first
    assert hourly_quarter.next_after(utc(2026, 11, 1, 5, 5)) == utc(2026, 11, 1, 5, 10)


def test_europe_london_transitions() -> None:
    # 2026-03-29 01:00 GMT -> 02:00 BST; 2026-10-25 02:00 BST -> 01:00 GMT
    daily = CronSchedule("30 1 * * *", "Europe/London")
    quarter = CronSchedule("*/30 * * * *", "Europe/London")

    assert walls(chain(daily, utc(2026, 3, 28, 12), 2), LONDON) == [
        "2026-03-29 02:00:00+0100",
        "2026-03-30 01:30:00+0100",
    ]
    assert walls(chain(daily, utc(2026, 10, 24, 12), 2), LONDON) == [
        "2026-10-25 01:30:00+0100",
        "2026-10-26 01:30:00+0000",
    ]
    assert chain(quarter, utc(2026, 10, 24, 23, 50), 5) == [
        utc(2026, 10, 25, 0) + timedelta(minutes=30 * k) for k in range(5)
    ]


def _oracle(
    expr_matches: Callable[[datetime], bool],
    every_hour: bool,
    zone: ZoneInfo,
    start: datetime,
    minutes: int,
) -> list[datetime]:
    """Occurrences by the documented DST rules, found by scanning every minute."""
    found = []
    for m in range(1, minutes):
        instant = start + timedelta(minutes=m)
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        before = (instant - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None)
        skipped = []
        probe = before + timedelta(minutes=1)
        while probe < wall:  # walls the clock jumped over just now
            skipped.append(probe)
            probe += timedelta(minutes=1)
        if expr_matches(wall) and (every_hour or local.fold == 0):
            found.append(instant)
        elif not every_hour and any(expr_matches(w) for w in skipped):
            found.append(instant)
    return found


@pytest.mark.parametrize(
    ("zone", "transition"),
    [
        (NEW_YORK, utc(2026, 3, 8, 7)),
        (NEW_YORK, utc(2026, 11, 1, 6)),
        (LONDON, utc(2026, 3, 29, 1)),
        (LONDON, utc(2026, 10, 25, 1)),
        (LORD_HOWE, utc(2026, 4, 4, 15)),
        (LORD_HOWE, utc(2026, 10, 3, 15, 30)),
    ],
)
@pytest.mark.parametrize(
    ("expr", "matches", "every_hour"),
    [
        ("30 2 * * *", lambda d: (d.hour, d.minute) == (2, 30), False),
        ("*/20 1,2 * * *", lambda d: d.hour in (1, 2) and d.minute % 20 == 0, False),
        ("45 1 * * *", lambda d: (d.hour, d.minute) == (1, 45), False),
        ("*/15 * * * *", lambda d: d.minute % 15 == 0, True),
        ("0,50 * * * *", lambda d: d.minute in (0, 50), True),
    ],
)
def test_dst_rules_against_a_scan(
    zone: ZoneInfo,
    transition: datetime,
    expr: str,
    matches: Callable[[datetime], bool],
    every_hour: bool,
) -> None:
    # Given the occurrences the documented rules give within 4 hours of a transition
    start = transition - timedelta(hours=2)
    expected = _oracle(matches, every_hour, zone, start, 4 * 60)
    schedule = CronSchedule(expr, zone)

    # Then successive next_after calls list exactly those
    listed = []
    current = start
    while True:
        following = schedule.next_after(current)
        assert following is not None and following > current
        if following >= start + timedelta(minutes=4 * 60):
            break
        listed.append(following)
        current = following
    assert listed == expected

    # And from any point, next_after gives the first of them after it
    for m in range(0, 4 * 60 - 30, 7):
        point = start + timedelta(minutes=m, seconds=17)
        want = next((x for x in expected if x > point), None)
        if want is not None:
            assert schedule.next_after(point) == want, point


def test_naive_input_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a machine whose local time is India (UTC+5:30, no DST)
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        schedule = CronSchedule("0 * * * *")
        # When passing a naive 10:20 local time (04:50 UTC)
        result = schedule.next_after(datetime(2026, 1, 1, 10, 20))
        # Then it means 04:50 UTC
        assert result == utc(2026, 1, 1, 5)
        assert OnceSchedule(datetime(2026, 1, 1, 10, 20)).run_at == utc(2026, 1, 1, 4, 50)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_aware_input_in_any_zone() -> None:
    schedule = CronSchedule("0 * * * *")

    assert schedule.next_after(datetime(2026, 1, 1, 10, 20, tzinfo=BERLIN)) == utc(2026, 1, 1, 10)


def test_far_future_ends_with_none() -> None:
    schedule = CronSchedule("0 0 * * *", "America/New_York")

    assert schedule.next_after(datetime(9999, 12, 31, 12, tzinfo=UTC)) is None
    assert IntervalSchedule(60).next_after(datetime.max.replace(tzinfo=UTC)) is None


def test_cron_is_safe_across_threads() -> None:
    schedule = CronSchedule("*/7 * * * *", "Europe/Berlin")
    starts = [utc(2026, 1, 1) + timedelta(minutes=13 * k) for k in range(200)]
    expected = [schedule.next_after(s) for s in starts]
    results: list[list[Optional[datetime]]] = []

    def work() -> None:
        results.append([schedule.next_after(s) for s in starts])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert results == [expected] * 4


# --------------------------------------------------------------------------------------------
# Cron errors


@pytest.mark.parametrize(
    ("expr", "fragments"),
    [
        ("61 * * * *", ["'61 * * * *'", "minute field '61' is out of range 0-59"]),
        ("* 24 * * *", ["hour field '24' is out of range 0-23"]),
        ("* * 0 * *", ["day-of-month field '0' is out of range 1-31"]),
        ("* * * 13 *", ["month field '13' is out of range 1-12"]),
        ("* * * * 8", ["day-of-week field '8' is out of range 0-7"]),
        ("60 * * * * *", ["second field '60' is out of range 0-59"]),
        ("1,2-99 * * * *", ["minute field '1,2-99': '99' is out of range 0-59"]),
        (
            "* * *",
            ["'* * *' has 3 fields; expected 5 (min hour dom month dow) or 6 (sec min hour dom"],
        ),
        ("* * * * * * *", ["has 7 fields"]),
        ("", ["'' has 0 fields"]),
        ("*/0 * * * *", ["minute field '*/0' has a step of 0"]),
        ("*/x * * * *", ["minute field '*/x'", "not a whole number"]),
        ("* * * FOO *", ["month field 'FOO'", "JAN-DEC"]),
        ("* * * * MON-FOO", ["day-of-week field 'MON-FOO': 'FOO'"]),
        ("* * * JAN MAR#2", ["day-of-week field 'MAR#2': 'MAR'"]),
        ("MON * * * *", ["minute field 'MON'"]),
        ("1,,2 * * * *", ["empty list item"]),
        ("? * * * *", ["minute field '?'"]),
        ("* * * * 1#6", ["day-of-week field '1#6'"]),
        ("* * * * 1#1,3", ["cannot mix"]),
        ("0 0 1 * MON#1", ["uses day#n", "day-of-month must be '*' or '?', not '1'"]),
        ("* * 15W * *", ["day-of-month field '15W'"]),
        ("H * * * *", ["minute field 'H'"]),
        ("@reboot", ["unknown macro '@reboot'"]),
        ("0 0 31 2 *", ["never fires", "'31'", "'2'"]),
        ("0 0 30,31 2 *", ["never fires"]),
        ("0 0 31 4,6,9,11 *", ["never fires"]),
        ("1-2-3 * * * *", ["minute field '1-2-3'"]),
        ("٣ * * * *", ["minute field '٣'"]),  # a non-ASCII digit
        ("9" * 5000 + " * * * *", ["is out of range 0-59"]),
    ],
)
def test_invalid_expressions_name_the_bad_part(expr: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        CronSchedule(expr)

    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("expr", [None, 5, b"* * * * *", ["*"] * 5])
def test_non_string_expression(expr: object) -> None:
    with pytest.raises(InvalidScheduleError, match="must be a str"):
        CronSchedule(expr)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tz", ["Mars/Olympus", "", "America", "../etc/passwd", "Europe/Berlin\x00", "UTC+25:00", 5]
)
def test_unknown_time_zone(tz: object) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        CronSchedule("* * * * *", tz)  # type: ignore[arg-type]

    assert repr(tz) in str(caught.value)


def test_next_after_wrong_type() -> None:
    with pytest.raises(InvalidScheduleError, match="dt must be a datetime"):
        CronSchedule("* * * * *").next_after("2026-01-01")  # type: ignore[arg-type]


def test_cron_value_semantics() -> None:
    schedule = CronSchedule("*/5 * * * *", "Europe/Berlin")

    assert repr(schedule) == "CronSchedule(expr='*/5 * * * *', tz='Europe/Berlin')"
    assert schedule == CronSchedule("*/5 * * * *", "Europe/Berlin")
    assert schedule != CronSchedule("*/5 * * * *")
    assert len({schedule, CronSchedule("*/5 * * * *", BERLIN)}) == 1
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    assert copy.deepcopy(schedule).next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 5)
    assert isinstance(schedule, Schedule)
    with pytest.raises(AttributeError):
        schedule.expr = "* * * * *"


# --------------------------------------------------------------------------------------------
# Property tests

_PIECES = st.one_of(
    st.integers(0, 70).map(str),
    st.sampled_from(["*", "/", ",", "-", "?", "L", "W", "#", "MON", "jan", "Sun", "dec", "H"]),
)
_TOKENS = st.one_of(
    st.integers(0, 12).map(str),
    st.sampled_from(["*", "?", "*/5", "1-5", "MON-FRI", "L", "2#3", "jan,jul"]),
    st.lists(_PIECES, min_size=1, max_size=4).map("".join),
)
_ZONES = st.sampled_from(["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe"])
_STARTS = st.datetimes(
    min_value=datetime(1975, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def _check_constructor_is_total(expr: object, tz: str, starts: list[datetime]) -> None:
    try:
        schedule = CronSchedule(expr, tz)  # type: ignore[arg-type]
    except InvalidScheduleError:
        return
    for start in starts:
        following = schedule.next_after(start)
        assert following is None or following > start


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=40), _ZONES, st.lists(_STARTS, min_size=1, max_size=3))
def test_random_text_is_valid_or_invalid_schedule_error(
    expr: str, tz: str, starts: list[datetime]
) -> None:
    _check_constructor_is_total(expr, tz, starts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_TOKENS, min_size=5, max_size=6).map(" ".join),
    _ZONES,
    st.lists(_STARTS, min_size=1, max_size=3),
)
def test_random_cron_tokens_are_valid_or_invalid_schedule_error(
    expr: str, tz: str, starts: list[datetime]
) -> None:
    _check_constructor_is_total(expr, tz, starts)


_MINUTE_SETS = st.sets(st.integers(0, 59), min_size=1, max_size=4)
_HOUR_SETS = st.one_of(st.none(), st.sets(st.integers(0, 23), min_size=1, max_size=3))


@settings(max_examples=200, deadline=None)
@given(_MINUTE_SETS, _HOUR_SETS, _ZONES, _STARTS)
def test_generated_expressions_match_their_fields(
    minutes: set[int], hours: Optional[set[int]], tz: str, start: datetime
) -> None:
    # Given "M H * * *" with explicit lists
    hour_text = "*" if hours is None else ",".join(map(str, sorted(hours)))
    expr = f"{','.join(map(str, sorted(minutes)))} {hour_text} * * *"
    schedule = CronSchedule(expr, tz)
    zone = ZoneInfo(tz)

    # When listing successive occurrences
    runs = chain(schedule, start, 6)

    # Then each one matches the fields in the zone, or closes a DST gap that swallowed one
    for run in runs:
        local = run.astimezone(zone)
        matched = local.minute in minutes and (hours is None or local.hour in hours)
        closes_gap = (run - timedelta(microseconds=1)).astimezone(zone).utcoffset() != (
            local.utcoffset()
        )
        assert matched or (hours is not None and closes_gap), (expr, tz, run, local)
        assert run.second == 0 and run.microsecond == 0


# --------------------------------------------------------------------------------------------
# IntervalSchedule


def test_interval_without_start_adds_one_interval() -> None:
    schedule = IntervalSchedule(90)

    assert schedule.next_after(utc(2026, 1, 1, 0, 0, 0, 5)) == utc(2026, 1, 1, 0, 1, 30, 5)
    assert schedule.every == 90.0
    assert schedule.start_at is None


def test_interval_does_not_drift() -> None:
    # Given a tenth of a second, which binary floats cannot hold exactly
    anchored = IntervalSchedule(0.1, start_at=utc(2026, 1, 1))
    free = IntervalSchedule(0.1)

    # When taking 10,000 steps
    assert chain(anchored, utc(2026, 1, 1), 10_000)[-1] == utc(2026, 1, 1, 0, 16, 40)
    assert chain(free, utc(2026, 1, 1), 10_000)[-1] == utc(2026, 1, 1, 0, 16, 40)


def test_interval_start_at_anchors_the_grid() -> None:
    schedule = IntervalSchedule(timedelta(minutes=10), start_at=utc(2026, 1, 1, 0, 3))

    assert schedule.every == 600.0
    assert schedule.next_after(utc(2025, 12, 1)) == utc(2026, 1, 1, 0, 3)
    assert schedule.next_after(utc(2026, 1, 1, 0, 3)) == utc(2026, 1, 1, 0, 13)
    assert schedule.next_after(utc(2026, 1, 1, 0, 12, 59)) == utc(2026, 1, 1, 0, 13)
    assert schedule.next_after(utc(2027, 1, 1)) == utc(2027, 1, 1, 0, 3)


def test_interval_start_at_is_converted_to_utc() -> None:
    schedule = IntervalSchedule(60, start_at=datetime(2026, 7, 1, 12, tzinfo=BERLIN))

    assert schedule.start_at == utc(2026, 7, 1, 10)
    assert schedule.start_at is not None and schedule.start_at.tzinfo is UTC


@pytest.mark.parametrize("every", [0, -1, -0.5, timedelta(0), timedelta(seconds=-5), 1e-9])
def test_interval_must_be_positive(every: object) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        IntervalSchedule(every)  # type: ignore[arg-type]

    assert repr(every) in str(caught.value)


@pytest.mark.parametrize("every", ["60", None, True, [60], float("nan"), float("inf"), 1e300])
def test_interval_wrong_types(every: object) -> None:
    with pytest.raises(InvalidScheduleError):
        IntervalSchedule(every)  # type: ignore[arg-type]


def test_interval_start_at_wrong_type() -> None:
    with pytest.raises(InvalidScheduleError, match="start_at must be a datetime"):
        IntervalSchedule(60, start_at="2026-01-01")  # type: ignore[arg-type]


def test_interval_value_semantics() -> None:
    schedule = IntervalSchedule(timedelta(seconds=30), utc(2026, 1, 1))

    assert schedule == IntervalSchedule(30.0, utc(2026, 1, 1))
    assert hash(schedule) == hash(IntervalSchedule(30, utc(2026, 1, 1)))
    assert "every=30.0" in repr(schedule)
    assert pickle.loads(pickle.dumps(schedule)).next_after(utc(2026, 1, 1)) == utc(
        2026, 1, 1, 0, 0, 30
    )
    assert isinstance(schedule, Schedule)


# --------------------------------------------------------------------------------------------
# OnceSchedule


def test_once() -> None:
    schedule = OnceSchedule(datetime(2026, 5, 1, 12, tzinfo=BERLIN))

    assert schedule.run_at == utc(2026, 5, 1, 10)
    assert schedule.next_after(utc(2026, 5, 1)) == utc(2026, 5, 1, 10)
    assert schedule.next_after(utc(2026, 5, 1, 10)) is None
    assert schedule.next_after(utc(2027, 1, 1)) is None
    assert isinstance(schedule, Schedule)


@pytest.mark.parametrize("run_at", ["2026-01-01", None, 1_700_000_000, datetime(2026, 1, 1).date()])
def test_once_wrong_type(run_at: object) -> None:
    with pytest.raises(InvalidScheduleError, match="run_at must be a datetime"):
        OnceSchedule(run_at)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# latest_due


def _walk(
    schedule: Schedule, first: datetime, now: datetime
) -> tuple[datetime, Optional[datetime]]:
    current = first
    while True:
        following = schedule.next_after(current)
        if following is None or following > now:
            return current, following
        current = following


class _CountingInterval(IntervalSchedule):
    """An IntervalSchedule counting its next_after calls."""

    calls = 0

    def next_after(self, dt: datetime) -> Optional[datetime]:
        type(self).calls += 1
        return super().next_after(dt)


class _CountingCron(CronSchedule):
    """A CronSchedule counting its next_after calls."""

    calls = 0

    def next_after(self, dt: datetime) -> Optional[datetime]:
        type(self).calls += 1
        return super().next_after(dt)


def test_latest_due_interval_a_year_behind_is_arithmetic() -> None:
    # 31.5 million missed occurrences: computed, not walked (one call for the following)
    schedule = _CountingInterval(1)
    now = utc(2026, 6, 1, 12, 0, 0, 250_000)
    first = now - timedelta(days=365, microseconds=250_000)

    latest, following = latest_due(schedule, first, now)

    assert _CountingInterval.calls == 1
    assert latest == utc(2026, 6, 1, 12)
    assert following == utc(2026, 6, 1, 12, 0, 1)


def test_latest_due_interval_with_start_at() -> None:
    schedule = IntervalSchedule(60, start_at=utc(2026, 1, 1, 0, 0, 30))

    assert latest_due(schedule, utc(2026, 1, 1, 0, 0, 30), utc(2026, 3, 1, 0, 0, 10)) == (
        utc(2026, 2, 28, 23, 59, 30),
        utc(2026, 3, 1, 0, 0, 30),
    )
    # the next occurrence is after now: first itself is the latest
    assert latest_due(schedule, utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1)) == (
        utc(2026, 1, 1, 0, 0, 30),
        utc(2026, 1, 1, 0, 1, 30),
    )


def test_latest_due_cron_a_month_behind_is_a_search_not_a_walk() -> None:
    # 8,900 missed occurrences, found in a logarithmic number of next_after calls
    schedule = _CountingCron("*/5 * * * *", "Europe/Berlin")

    latest, following = latest_due(schedule, utc(2026, 1, 1), utc(2026, 2, 1, 10, 3, 59))

    assert _CountingCron.calls <= 100
    assert (latest, following) == (utc(2026, 2, 1, 10), utc(2026, 2, 1, 10, 5))


def test_latest_due_cron_every_second_a_year_behind() -> None:
    schedule = CronSchedule("* * * * * *")

    latest, following = latest_due(schedule, utc(2025, 1, 1), utc(2026, 1, 1, 0, 0, 0, 999_999))

    assert (latest, following) == (utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 1))


@pytest.mark.parametrize(
    ("expr", "tz", "first", "now"),
    [
        ("*/15 * * * *", "America/New_York", utc(2026, 11, 1, 4), utc(2026, 11, 1, 6, 20)),
        ("*/15 * * * *", "America/New_York", utc(2026, 11, 1, 4), utc(2026, 11, 1, 5, 50)),
        ("30 1 * * *", "America/New_York", utc(2026, 10, 30, 5, 30), utc(2026, 11, 1, 6, 40)),
        ("30 2 * * *", "America/New_York", utc(2026, 3, 6, 7, 30), utc(2026, 3, 8, 7, 1)),
        ("0 0 1 * *", "UTC", utc(2025, 2, 1), utc(2026, 1, 31, 23, 59)),
        ("0 0 1 * *", "UTC", utc(2025, 2, 1), utc(2025, 2, 28)),  # nothing after first
    ],
)
def test_latest_due_cron_agrees_with_walking(
    expr: str, tz: str, first: datetime, now: datetime
) -> None:
    schedule = CronSchedule(expr, tz)

    assert latest_due(schedule, first, now) == _walk(schedule, first, now)


def test_latest_due_first_after_now() -> None:
    schedule = CronSchedule("0 * * * *")

    assert latest_due(schedule, utc(2026, 1, 1, 5), utc(2026, 1, 1, 4)) == (
        utc(2026, 1, 1, 5),
        utc(2026, 1, 1, 6),
    )


def test_latest_due_once() -> None:
    schedule = OnceSchedule(utc(2026, 1, 1))

    assert latest_due(schedule, utc(2026, 1, 1), utc(2026, 2, 1)) == (utc(2026, 1, 1), None)


class _EveryTenSeconds:
    """A schedule of our own: every 10 s of the epoch, counting its calls."""

    def __init__(self, seconds: int = 10) -> None:
        self.seconds = seconds
        self.calls = 0

    def next_after(self, dt: datetime) -> Optional[datetime]:
        self.calls += 1
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        elapsed = (dt - epoch) // timedelta(seconds=self.seconds)
        return epoch + (elapsed + 1) * timedelta(seconds=self.seconds)

    def describe(self) -> dict[str, object]:
        return {"type": "custom"}


def test_latest_due_custom_schedule_walks() -> None:
    schedule = _EveryTenSeconds()
    assert isinstance(schedule, Schedule)

    latest, following = latest_due(schedule, utc(2026, 1, 1), utc(2026, 1, 1, 0, 10, 5))

    assert (latest, following) == (utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 0, 10, 10))
    assert schedule.calls == 62  # 60 steps, the one past now, and the following


def test_latest_due_custom_schedule_jumps_after_100_000_steps() -> None:
    # Given a custom every-second schedule two days behind (172,800 occurrences)
    schedule = _EveryTenSeconds(seconds=1)

    latest, following = latest_due(schedule, utc(2026, 1, 1), utc(2026, 1, 3, 0, 0, 0, 500))

    # Then the walk stops at 100,000 steps and a search finds the rest
    assert (latest, following) == (utc(2026, 1, 3), utc(2026, 1, 3, 0, 0, 1))
    assert 100_000 < schedule.calls < 100_200


# --------------------------------------------------------------------------------------------
# Descriptions


@pytest.mark.parametrize(
    "schedule",
    [
        CronSchedule("*/5 * * * *", "Europe/Berlin"),
        CronSchedule("@daily"),
        CronSchedule("0 9 * * *", timezone(timedelta(hours=-3, minutes=-30))),
        IntervalSchedule(2.5),
        IntervalSchedule(timedelta(hours=1), start_at=datetime(2026, 1, 1, 9, tzinfo=BERLIN)),
        OnceSchedule(utc(2026, 1, 1, 12, 0, 0, 123)),
    ],
)
def test_describe_round_trips_through_json(schedule: Schedule) -> None:
    description = json.loads(json.dumps(schedule.describe()))

    rebuilt = schedule_from_description(description)

    assert rebuilt == schedule
    assert rebuilt.describe() == description
    start = utc(2026, 1, 1, 10)
    assert rebuilt.next_after(start) == schedule.next_after(start)


def test_describe_shapes() -> None:
    assert CronSchedule("*/5 * * * *", "Europe/Berlin").describe() == {
        "type": "cron",
        "expr": "*/5 * * * *",
        "tz": "Europe/Berlin",
    }
    assert IntervalSchedule(60).describe() == {"type": "interval", "every": 60.0, "start_at": None}
    assert OnceSchedule(utc(2026, 1, 1)).describe() == {
        "type": "once",
        "run_at": "2026-01-01T00:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("description", "fragment"),
    [
        ([], "must be a mapping"),
        ({}, "type must be one of"),
        ({"type": "nope"}, "type must be one of"),
        ({"type": "cron"}, "missing keys ['expr']"),
        ({"type": "cron", "expr": "* * * * *", "extra": 1}, "unknown keys ['extra']"),
        ({"type": "cron", "expr": 5}, "must be strings"),
        ({"type": "cron", "expr": "61 * * * *"}, "minute field '61'"),
        ({"type": "cron", "expr": "* * * * *", "tz": "Nowhere/Town"}, "unknown time zone"),
        ({"type": "interval", "every": "60"}, "every must be seconds"),
        ({"type": "interval", "every": True}, "every must be seconds"),
        ({"type": "interval", "every": -1}, "-1"),
        ({"type": "interval", "every": 1, "start_at": "yesterday"}, "not ISO 8601"),
        ({"type": "interval", "every": 1, "start_at": "2026-01-01T00:00:00"}, "no UTC offset"),
        ({"type": "once", "run_at": 5}, "must be an ISO 8601 string"),
        ({"type": "once", "run_at": "__import__('os')"}, "not ISO 8601"),
    ],
)
def test_malformed_descriptions(description: object, fragment: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        schedule_from_description(description)  # type: ignore[arg-type]

    assert fragment in str(caught.value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(every_ms=st.integers(1, 10**8), start_ms=st.integers(0, 10**12),
       skipped=st.integers(0, 10**6), extra_ms=st.integers(0, 10**9),
       off_grid_us=st.sampled_from([0, 0, 1, 500]))
def test_latest_due_ms_agrees_with_latest_due(every_ms, start_ms, skipped, extra_ms,
                                              off_grid_us):
    # Given an interval schedule (on whole milliseconds, or not) and a first missed
    # occurrence on its grid, as the scheduler stores them
    schedule = IntervalSchedule(timedelta(milliseconds=every_ms, microseconds=off_grid_us),
                                start_at=from_ms(start_ms))
    first = schedule.start_at
    for _ in range(min(skipped, 3)):
        first = schedule.next_after(first)
    first_ms = to_ms(first)
    now_ms = first_ms + extra_ms

    # When the backlog is coalesced in milliseconds (the scheduler's fast path)
    latest_ms, following_ms = latest_due_ms(schedule, first_ms, now_ms)

    # Then it is the generic answer, in milliseconds
    latest, following = latest_due(schedule, from_ms(first_ms), from_ms(now_ms))
    assert (latest_ms, following_ms) == (to_ms(latest), to_ms(following))
