"""Job: argument validation, how handlers are called, and its plain-data description."""

from __future__ import annotations

import functools
import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from pyscheduler import (
    CronSchedule,
    FakeClock,
    IntervalSchedule,
    InvalidJobError,
    Job,
    JobContext,
    JobStatus,
    OnceSchedule,
    RetryPolicy,
)

from .helpers import START, step

EVERY = IntervalSchedule(60)


def noop(ctx: JobContext) -> None:
    pass


def context_for(name: str = "j") -> JobContext:
    return JobContext(name, START, 1, None, 1)


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", None, 42, b"bytes", "x" * 201, "a\nb", "tab\there",
                                  "bell\x07", "zero\u200bwidth"],
                         ids=["empty", "None", "int", "bytes", "201-chars", "newline", "tab",
                              "control", "zero-width-space"])
def test_invalid_name_is_rejected(name):
    with pytest.raises(InvalidJobError) as info:
        Job(name, EVERY, noop)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["x" * 200, "a", "nightly report", "tâche-été", "db:vacuum/1"])
def test_valid_name_is_kept(name):
    assert Job(name, EVERY, noop).name == name


def test_schedule_without_next_after_is_rejected():
    with pytest.raises(InvalidJobError):
        Job("j", "*/5 * * * *", noop)  # type: ignore[arg-type]


# --- handlers ------------------------------------------------------------------------------


class Task:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def run(self, ctx: JobContext) -> None:
        self.seen.append(ctx)

    def run_bare(self) -> None:
        self.seen.append("bare")


class CallableTask:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def __call__(self, ctx: JobContext) -> None:
        self.seen.append(ctx)


def with_prefix(prefix: str, ctx: JobContext) -> str:
    return f"{prefix}:{ctx.job_name}"


def test_handler_taking_the_context_gets_it():
    seen = []
    job = Job("j", EVERY, lambda ctx: seen.append(ctx))
    ctx = context_for()
    job.call_handler(ctx)
    assert seen == [ctx]


def test_handler_taking_nothing_is_called_without_arguments():
    calls = []

    def bare() -> None:
        calls.append("called")

    Job("j", EVERY, bare).call_handler(context_for())
    Job("k", EVERY, lambda: calls.append("lambda")).call_handler(context_for())
    assert calls == ["called", "lambda"]


def test_bound_methods_are_called_the_way_they_want():
    task = Task()
    ctx = context_for()
    Job("with-ctx", EVERY, task.run).call_handler(ctx)
    Job("bare", EVERY, task.run_bare).call_handler(ctx)
    assert task.seen == [ctx, "bare"]


def test_partial_leaving_the_context_is_given_it():
    job = Job("partial", EVERY, functools.partial(with_prefix, "p"))
    assert job.call_handler(context_for("partial")) == "p:partial"


def test_instance_with_call_taking_the_context_gets_it():
    task = CallableTask()
    ctx = context_for()
    Job("j", EVERY, task).call_handler(ctx)
    assert task.seen == [ctx]


def test_handler_result_is_returned_by_call_handler():
    assert Job("j", EVERY, lambda: 42).call_handler(context_for()) == 42


def two_arguments(ctx: JobContext, extra: object) -> None:
    pass


def keyword_only(*, ctx: JobContext) -> None:
    pass


@pytest.mark.parametrize("handler", [two_arguments, lambda a, b: None, keyword_only,
                                     functools.partial(two_arguments)],
                         ids=["function", "lambda", "keyword-only", "partial"])
def test_handler_needing_more_than_one_argument_is_rejected(handler):
    with pytest.raises(InvalidJobError) as info:
        Job("j", EVERY, handler)
    assert "j" in str(info.value)


@pytest.mark.parametrize("handler", [None, 42, "noop", object()])
def test_non_callable_handler_is_rejected(handler):
    with pytest.raises(InvalidJobError):
        Job("j", EVERY, handler)


def test_a_handler_taking_nothing_runs_under_a_scheduler(schedulers):
    # Given a stepped scheduler with a bound method handler that takes no context
    clock = FakeClock(START)
    task = Task()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("bare", IntervalSchedule(1), task.run_bare))
    scheduler.start(background=False)

    # When its occurrence comes
    clock.advance(1)
    step(scheduler)

    # Then it ran once, successfully
    assert task.seen == ["bare"]
    assert scheduler.get_job("bare").metadata.last_error == ""


# --- timeout and misfire_grace_time --------------------------------------------------------


@pytest.mark.parametrize("field", ["timeout", "misfire_grace_time"])
@pytest.mark.parametrize("value, seconds", [(5, 5.0), (0.25, 0.25),
                                            (timedelta(minutes=2), 120.0),
                                            (timedelta(milliseconds=1), 0.001)])
def test_durations_accept_seconds_and_timedelta(field, value, seconds):
    job = Job("j", EVERY, noop, **{field: value})
    assert getattr(job, field) == seconds
    assert type(getattr(job, field)) is float


@pytest.mark.parametrize("field", ["timeout", "misfire_grace_time"])
def test_durations_default_to_none(field):
    assert getattr(Job("j", EVERY, noop), field) is None


@pytest.mark.parametrize("field", ["timeout", "misfire_grace_time"])
@pytest.mark.parametrize("value", [0, -1, 0.0, timedelta(0), timedelta(seconds=-1), math.nan,
                                   math.inf, "5", True, [5]],
                         ids=["0", "-1", "0.0", "td0", "td-1", "nan", "inf", "str", "bool",
                              "list"])
def test_durations_reject_non_positive_and_wrong_types(field, value):
    with pytest.raises(InvalidJobError) as info:
        Job("j", EVERY, noop, **{field: value})
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)


# --- retry policy, enabled, recoveries ------------------------------------------------------


@pytest.mark.parametrize("policy", [RetryPolicy, {"max_retries": 3}, 3, "default"],
                         ids=["class", "dict", "int", "str"])
def test_retry_policy_must_be_a_retry_policy(policy):
    with pytest.raises(InvalidJobError):
        Job("j", EVERY, noop, retry_policy=policy)


def test_retry_policy_is_kept():
    policy = RetryPolicy(max_retries=2)
    assert Job("j", EVERY, noop, retry_policy=policy).retry_policy is policy


def test_enabled_job_starts_scheduled_and_disabled_one_paused():
    assert Job("on", EVERY, noop).metadata.status is JobStatus.SCHEDULED
    assert Job("off", EVERY, noop, enabled=False).metadata.status is JobStatus.PAUSED


@pytest.mark.parametrize("recover, policy, expected", [
    (False, RetryPolicy(max_retries=3), 0),
    (False, None, 0),
    (True, None, 1),
    (True, RetryPolicy(max_retries=3), 3),
    (True, RetryPolicy(max_retries=0), 1),
    (True, RetryPolicy(max_retries=7), 7),
])
def test_max_recoveries(recover, policy, expected):
    job = Job("j", EVERY, noop, retry_policy=policy, recover=recover)
    assert job.max_recoveries == expected


def test_positional_arguments_follow_the_documented_order():
    policy = RetryPolicy.default()
    job = Job("n", IntervalSchedule(1), noop, 5, policy, 2, False, False)
    assert job.timeout == 5.0
    assert job.retry_policy is policy
    assert job.misfire_grace_time == 2.0
    assert job.enabled is False and job.metadata.status is JobStatus.PAUSED
    assert job.recover is False
    assert Job("n", IntervalSchedule(1), noop, 5).timeout == 5.0


# --- describe ------------------------------------------------------------------------------


class HomeMadeSchedule:
    """A schedule of the user's own, without describe()."""

    def next_after(self, dt: datetime) -> datetime | None:
        return None

    def __repr__(self) -> str:
        return "HomeMadeSchedule()"


@pytest.mark.parametrize("schedule, kind", [
    (CronSchedule("*/5 * * * *", tz="Europe/Berlin"), "cron"),
    (IntervalSchedule(timedelta(minutes=15), start_at=START), "interval"),
    (IntervalSchedule(30), "interval"),
    (OnceSchedule(datetime(2030, 6, 1, 12, tzinfo=timezone.utc)), "once"),
], ids=["cron", "interval-start", "interval", "once"])
def test_describe_is_json_serialisable_and_names_the_schedule(schedule, kind):
    job = Job("described", schedule, noop, timeout=timedelta(seconds=30),
              retry_policy=RetryPolicy(max_retries=2, retry_on=(OSError,)),
              misfire_grace_time=10)
    description = job.describe()
    round_tripped = json.loads(json.dumps(description))
    assert round_tripped == description
    assert description["name"] == "described"
    assert description["schedule"]["type"] == kind  # type: ignore[index]
    assert description["timeout"] == 30.0
    assert description["misfire_grace_time"] == 10.0
    assert description["retry_policy"]["max_retries"] == 2  # type: ignore[index]


def test_describe_of_a_custom_schedule_uses_its_repr():
    description = Job("custom", HomeMadeSchedule(), noop, recover=False).describe()
    json.dumps(description)
    assert description["schedule"] == {"type": "HomeMadeSchedule()"}
    assert description["retry_policy"] is None
    assert description["timeout"] is None
    assert description["recover"] is False


@pytest.mark.parametrize("handler, takes_context", [
    (lambda ctx=None: None, True),
    (lambda *args: None, True),
    (lambda ctx, *, flag=True: None, True),
])
def test_plain_function_arities_read_from_code(handler, takes_context):
    job = Job("arity", IntervalSchedule(1), handler)
    assert job._takes_context is takes_context


@pytest.mark.parametrize("handler", [lambda *, required: None, lambda a, b=1, *, c: None])
def test_required_keyword_only_arguments_are_rejected(handler):
    with pytest.raises(InvalidJobError, match="one argument"):
        Job("arity", IntervalSchedule(1), handler)
