"""JobContext and CancellationToken: what a handler sees, and cooperative cancellation."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from pyscheduler import (
    CancellationToken,
    FakeClock,
    IntervalSchedule,
    Job,
    JobCancelled,
    JobContext,
    current_job,
)

from .helpers import START, WAIT, step


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def make_context(clock: FakeClock, kind: str = "regular") -> JobContext:
    return JobContext("job", START, 1, None, 7, kind=kind, clock=clock)


def advance_until(clock: FakeClock, done: threading.Event, step_seconds: float) -> None:
    """Advance ``clock`` by ``step_seconds`` at a time until ``done`` is set (bounded)."""
    give_up = time.monotonic() + WAIT
    while not done.wait(0.002):
        assert time.monotonic() < give_up, "the waiting thread never woke up"
        clock.advance(step_seconds)


# --- CancellationToken ---------------------------------------------------------------------


def test_token_starts_uncancelled():
    token = CancellationToken()
    assert not token.cancelled
    assert token.reason == ""
    assert not token.event.is_set()


def test_token_keeps_the_first_reason():
    token = CancellationToken()
    token.cancel("timed out after 5 s")
    token.cancel("shutting down")
    assert token.cancelled and token.event.is_set()
    assert token.reason == "timed out after 5 s"


# --- JobContext ----------------------------------------------------------------------------


def test_context_reflects_its_token(clock):
    ctx = make_context(clock)
    assert not ctx.cancelled and ctx.cancel_reason == ""
    ctx.token.cancel("lease lost")
    assert ctx.cancelled and ctx.cancel_reason == "lease lost"


def test_raise_if_cancelled_does_nothing_before_cancellation(clock):
    make_context(clock).raise_if_cancelled()


def test_raise_if_cancelled_raises_a_base_exception_with_the_reason(clock):
    # Given a cancelled run whose handler catches every Exception
    ctx = make_context(clock)
    ctx.token.cancel("shutting down")

    def handler_body() -> None:
        try:
            ctx.raise_if_cancelled()
        except Exception:  # what careless handler code does
            pytest.fail("JobCancelled was swallowed by `except Exception`")

    # When it checks its token, Then JobCancelled gets through, carrying the reason
    with pytest.raises(JobCancelled) as info:
        handler_body()
    assert not isinstance(info.value, Exception)
    assert isinstance(info.value, BaseException)
    assert str(info.value) == "shutting down"


@pytest.mark.parametrize("kind, expected", [("recovery", True), ("regular", False),
                                            ("retry", False), ("manual", False)])
def test_is_recovery(clock, kind, expected):
    assert make_context(clock, kind).is_recovery is expected


def test_kind_defaults_to_regular():
    assert JobContext("job", START, 1, None, 1).kind == "regular"


def test_sleep_returns_true_once_the_fake_clock_passed_it(clock):
    # Given a handler thread sleeping 10 s on a fake clock
    ctx = make_context(clock)
    started_at = clock.monotonic()
    result: list[tuple[bool, float]] = []
    done = threading.Event()

    def sleeper() -> None:
        result.append((ctx.sleep(10), clock.monotonic()))
        done.set()

    thread = threading.Thread(target=sleeper)
    thread.start()

    # When another thread moves the clock forward second by second
    advance_until(clock, done, 1)
    thread.join(WAIT)

    # Then the sleep ran its full course (no early return) and reports it
    [(slept, woke_at)] = result
    assert slept is True
    assert woke_at - started_at >= 10


def test_sleep_accepts_a_timedelta(clock):
    ctx = make_context(clock)
    started_at = clock.monotonic()
    result: list[bool] = []
    done = threading.Event()
    thread = threading.Thread(target=lambda: (result.append(ctx.sleep(timedelta(minutes=1))),
                                              done.set()))
    thread.start()
    advance_until(clock, done, 30)
    thread.join(WAIT)
    assert result == [True]
    assert clock.monotonic() - started_at >= 60


def test_sleep_returns_false_promptly_when_cancelled_from_another_thread(clock):
    # Given a handler thread sleeping an hour on a clock that never moves
    ctx = make_context(clock)
    result: list[bool] = []
    done = threading.Event()
    thread = threading.Thread(target=lambda: (result.append(ctx.sleep(3600)), done.set()))
    thread.start()

    # When its token is cancelled
    ctx.token.cancel("timed out")

    # Then it wakes at once, reporting the cancellation
    assert done.wait(WAIT)
    thread.join(WAIT)
    assert result == [False]
    assert clock.now() == START


def test_sleep_on_a_cancelled_token_returns_false_at_once(clock):
    ctx = make_context(clock)
    ctx.token.cancel("gone")
    assert ctx.sleep(3600) is False


# --- current_job ---------------------------------------------------------------------------


def test_current_job_is_none_outside_a_job():
    assert current_job() is None


def report_current_name() -> str | None:
    """Code deep inside a handler that was not passed the context."""
    ctx = current_job()
    return None if ctx is None else ctx.job_name


def test_current_job_is_the_running_context_inside_a_handler(clock, schedulers):
    # Given handlers that look up current_job(), one of them taking no context at all
    seen: list[tuple[JobContext | None, JobContext]] = []
    deep: list[str | None] = []
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("probe", IntervalSchedule(1),
                           lambda ctx: seen.append((current_job(), ctx))))
    scheduler.register(Job("bare", IntervalSchedule(1),
                           lambda: deep.append(report_current_name())))
    scheduler.start(background=False)

    # When they run
    clock.advance(1)
    step(scheduler)

    # Then each saw its own context, and the test thread still sees none
    [(inside, ctx)] = seen
    assert inside is ctx
    assert deep == ["bare"]
    assert current_job() is None
