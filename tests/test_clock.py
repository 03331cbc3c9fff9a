"""FakeClock and SystemClock: the single source of time, and waits on it."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from pyscheduler import FakeClock, SystemClock

from .helpers import START, WAIT


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def waiter(clock, event: threading.Event, timeout: float):
    """Run ``clock.wait(event, timeout)`` on a thread; returns (thread, done, results)."""
    results: list[tuple[bool, float]] = []
    done = threading.Event()

    def run() -> None:
        results.append((clock.wait(event, timeout), clock.monotonic()))
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, results


def advance_until(clock: FakeClock, done: threading.Event, step_seconds: float) -> None:
    """Advance ``clock`` by ``step_seconds`` at a time until ``done`` is set (bounded)."""
    give_up = time.monotonic() + WAIT
    while not done.wait(0.002):
        assert time.monotonic() < give_up, "the waiting thread never woke up"
        clock.advance(step_seconds)


# --- FakeClock -----------------------------------------------------------------------------


def test_fake_clock_starts_where_told_in_utc():
    berlin = datetime(2030, 6, 1, 14, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    clock = FakeClock(berlin)
    assert clock.now() == berlin
    assert clock.now().tzinfo is timezone.utc
    assert clock.time() == berlin.timestamp()


def test_fake_clock_default_start():
    assert FakeClock().now() == datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_fake_clock_stands_still_until_told(clock):
    first = (clock.now(), clock.time(), clock.monotonic())
    assert (clock.now(), clock.time(), clock.monotonic()) == first


def test_advance_moves_every_reading_together(clock):
    wall, mono = clock.time(), clock.monotonic()
    clock.advance(90)
    assert clock.now() == START + timedelta(seconds=90)
    assert clock.time() == wall + 90
    assert clock.monotonic() == mono + 90
    clock.advance(0.5)
    assert clock.now() == START + timedelta(seconds=90.5)
    assert clock.monotonic() == mono + 90.5


def test_advance_accepts_a_timedelta(clock):
    clock.advance(timedelta(hours=1, milliseconds=250))
    assert clock.now() == START + timedelta(hours=1, milliseconds=250)


def test_advance_by_zero_is_allowed(clock):
    clock.advance(0)
    assert clock.now() == START


@pytest.mark.parametrize("step", [-1, -0.001, timedelta(seconds=-1)])
def test_advance_never_goes_back(clock, step):
    with pytest.raises(ValueError):
        clock.advance(step)
    assert clock.now() == START


@pytest.mark.parametrize("step", ["1", None, True])
def test_advance_rejects_non_durations(clock, step):
    with pytest.raises(TypeError):
        clock.advance(step)


@pytest.mark.parametrize("times, step", [(10, 0.1), (1000, 0.001)])
def test_many_small_advances_add_up_exactly(clock, times, step):
    for _ in range(times):
        clock.advance(step)
    assert clock.now() == START + timedelta(seconds=1)


def test_set_moves_to_an_instant(clock):
    mono = clock.monotonic()
    target = START + timedelta(days=1, seconds=3)
    clock.set(target)
    assert clock.now() == target
    assert clock.monotonic() == mono + 86_403


def test_set_to_the_past_raises(clock):
    clock.advance(10)
    with pytest.raises(ValueError):
        clock.set(START)
    assert clock.now() == START + timedelta(seconds=10)


def test_wait_returns_once_advanced_past_the_deadline(clock):
    # Given a thread waiting 30 s of fake time for an event nobody sets
    started_at = clock.monotonic()
    thread, done, results = waiter(clock, threading.Event(), 30)

    # When the test moves the clock 5 s at a time
    advance_until(clock, done, 5)
    thread.join(WAIT)

    # Then the wait ended after its full 30 s, reporting the event unset
    [(is_set, woke_at)] = results
    assert is_set is False
    assert woke_at - started_at >= 30


def test_wait_returns_when_the_event_is_set(clock):
    # Given a thread waiting an hour of fake time
    event = threading.Event()
    thread, done, results = waiter(clock, event, 3600)

    # When another thread sets the event, the clock standing still
    event.set()

    # Then the wait returns True at once
    assert done.wait(WAIT)
    thread.join(WAIT)
    assert [is_set for is_set, _ in results] == [True]
    assert clock.now() == START


def test_wait_on_a_set_event_or_without_time_returns_at_once(clock):
    event = threading.Event()
    assert clock.wait(event, 0) is False
    assert clock.wait(event, -5) is False
    event.set()
    assert clock.wait(event, 3600) is True
    assert clock.now() == START


# --- SystemClock ---------------------------------------------------------------------------


def test_system_clock_now_is_tz_aware_utc_and_current():
    clock = SystemClock()
    before = datetime.now(timezone.utc)
    now = clock.now()
    after = datetime.now(timezone.utc)
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after
    assert abs(clock.time() - time.time()) < 5


def test_system_clock_monotonic_never_goes_back():
    clock = SystemClock()
    readings = [clock.monotonic() for _ in range(1000)]
    assert readings == sorted(readings)


def test_system_clock_wait():
    clock = SystemClock()
    event = threading.Event()
    assert clock.wait(event, 0) is False
    assert clock.wait(event, -1) is False  # a negative timeout does not raise
    event.set()
    assert clock.wait(event, WAIT) is True
