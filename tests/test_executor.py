"""DefaultJobExecutor.execute isolates handler failures; describe_error formats them."""

from __future__ import annotations

import pytest

from pyscheduler import (
    DefaultJobExecutor,
    FakeClock,
    IntervalSchedule,
    Job,
    JobCancelled,
    JobContext,
    current_job,
)
from pyscheduler.executor import describe_error

from .helpers import START


def make_context(name: str = "job") -> JobContext:
    return JobContext(name, START, 1, None, 1, clock=FakeClock(START))


def raising(error: BaseException) -> Job:
    def handler(ctx: JobContext) -> None:
        raise error

    return Job("raiser", IntervalSchedule(60), handler)


def test_execute_returns_none_on_success_and_calls_the_handler_once():
    calls = []
    ctx = make_context()
    job = Job("ok", IntervalSchedule(60), lambda c: calls.append(c))
    assert DefaultJobExecutor().execute(job, ctx) is None
    assert calls == [ctx]


def test_execute_calls_a_handler_taking_nothing():
    calls = []
    job = Job("bare", IntervalSchedule(60), lambda: calls.append("bare"))
    assert DefaultJobExecutor().execute(job, make_context()) is None
    assert calls == ["bare"]


@pytest.mark.parametrize("error", [ValueError("bad input"), RuntimeError(), SystemExit(3),
                                   KeyboardInterrupt(), GeneratorExit(), JobCancelled("late"),
                                   MemoryError()],
                         ids=lambda error: type(error).__name__)
def test_execute_returns_whatever_the_handler_raised(error):
    # Given a handler raising anything, even a BaseException
    executor = DefaultJobExecutor()

    # When it is executed
    result = executor.execute(raising(error), make_context())

    # Then the very exception comes back instead of propagating
    assert result is error


def test_execute_sets_current_job_only_while_the_handler_runs():
    seen = []
    ctx = make_context("probe")
    job = Job("probe", IntervalSchedule(60), lambda: seen.append(current_job()))
    DefaultJobExecutor().execute(job, ctx)
    assert seen == [ctx]
    assert current_job() is None


def test_execute_resets_current_job_after_a_failure():
    DefaultJobExecutor().execute(raising(SystemExit(1)), make_context())
    assert current_job() is None


@pytest.mark.parametrize("error, text", [
    (ValueError("x"), "ValueError: x"),
    (ValueError(), "ValueError"),
    (ValueError(""), "ValueError"),
    (RuntimeError("disk full: /var"), "RuntimeError: disk full: /var"),
    (KeyError("k"), "KeyError: 'k'"),
    (SystemExit(3), "SystemExit: 3"),
    (JobCancelled("timed out after 5 s"), "JobCancelled: timed out after 5 s"),
    (KeyboardInterrupt(), "KeyboardInterrupt"),
])
def test_describe_error(error, text):
    assert describe_error(error) == text
