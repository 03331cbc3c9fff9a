"""Control: operating a group through its backend, next to schedulers that run its jobs.

Every behaviour runs on the memory backend and on a real redis-server (marked ``redis``): the
schedulers are stepped under a FakeClock, and the Control is a separate object on the same
store (for Redis, a client of its own, as an operator's process would have).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Iterator

import pytest

from pyscheduler import (
    ConfigError,
    Control,
    CronSchedule,
    FakeClock,
    IntervalSchedule,
    Job,
    JobContext,
    JobInfo,
    JobNotFoundError,
    JobStatus,
    MemoryBackend,
    RetryPolicy,
    RetryStrategy,
    Scheduler,
)
from pyscheduler.backends.base import JobState
from pyscheduler.backends.claim_rules import ABANDONED_ERROR
from pyscheduler.control import describe_schedule

from .helpers import START, WAIT, Recorder, Schedulers, step

HOUR = 3600


class Group:
    """A scheduler group: its backend's factory (one per scheduler, as separate processes
    would have on Redis) and a Control opened apart from them."""

    def __init__(self, clock: FakeClock, schedulers: Schedulers, make_backend, control: Control):
        self.clock = clock
        self._schedulers = schedulers
        self._make_backend = make_backend
        self.control = control

    def scheduler(self, *jobs: Job, instance_id: str = "worker-1", **config) -> Scheduler:
        """A started, stepped scheduler with ``jobs`` (and ``config`` fields)."""
        scheduler = self._schedulers.stepped(self.clock, self._make_backend(),
                                             instance_id=instance_id, **config)
        for job in jobs:
            scheduler.register(job)
        scheduler.start(background=False)
        return scheduler

    def settle(self, scheduler: Scheduler) -> None:
        """Let ``scheduler`` notice what the Control changed and run what is due: a tick
        interval passes (it polls the backend), then a step claims and runs."""
        for _ in range(3):
            self.clock.advance(5)
            step(scheduler)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def group(request: pytest.FixtureRequest, schedulers: Schedulers) -> Iterator[Group]:
    clock = FakeClock(START)
    if request.param == "memory":
        backend = MemoryBackend(clock)
        yield Group(clock, schedulers, lambda: backend, Control(backend))
        return
    from pyscheduler import RedisBackend

    url = request.getfixturevalue("redis_server").url
    with Control.from_url(url, key_prefix="ctl") as control:
        yield Group(clock, schedulers, lambda: RedisBackend.from_url(url, key_prefix="ctl"),
                    control)


def hourly(name: str, handler=lambda: None) -> Job:
    return Job(name, IntervalSchedule(HOUR), handler)


# -- reading the group ------------------------------------------------------------------------


def test_a_fresh_control_lists_the_jobs_a_running_scheduler_registered(group):
    # Given a scheduler that registered two jobs, one of them paused
    scheduler = group.scheduler(hourly("report"),
                                Job("cleanup", CronSchedule("0 3 * * *", "Europe/Paris"),
                                    lambda: None, enabled=False))

    # When a Control that registered nothing lists the group
    jobs = group.control.jobs()

    # Then it sees both, sorted, with their stored state
    assert [job.name for job in jobs] == ["cleanup", "report"]
    cleanup, report = jobs
    assert cleanup.status is JobStatus.PAUSED and cleanup.paused
    assert cleanup.schedule == "cron 0 3 * * * (Europe/Paris)"
    assert report.status is JobStatus.SCHEDULED and not report.paused
    assert report.schedule == "every 1h"
    assert report.next_run_at == scheduler.get_job("report").metadata.next_run_at
    assert report.next_run_at is not None and report.next_run_at.utcoffset() == timedelta(0)
    assert (report.holder, report.attempt, report.run_count, report.last_error) == (None, 0, 0, "")
    assert group.control.job("report") == report


def test_job_info_to_dict_is_json_with_utc_times_and_the_status_value(group):
    group.scheduler(hourly("report"))
    data = group.control.job("report").to_dict()
    assert list(data) == ["name", "status", "schedule", "next_run_at", "last_run_at",
                          "last_success_at", "last_error", "last_duration", "run_count",
                          "failure_count", "consecutive_failures", "paused", "holder",
                          "fence", "attempt"]
    assert data["status"] == "scheduled"
    assert isinstance(data["next_run_at"], str) and data["next_run_at"].endswith("+00:00")
    assert data["last_run_at"] is None and data["holder"] is None
    assert json.loads(json.dumps(data)) == data


def test_the_holder_is_the_instance_running_the_job_now(group, schedulers):
    # Given a job whose handler blocks, triggered through the Control
    release = schedulers.event()
    contexts: list[JobContext] = []

    def handler(ctx: JobContext) -> None:
        contexts.append(ctx)
        release.wait(WAIT)

    scheduler = group.scheduler(hourly("slow", handler), instance_id="host-a:123")
    group.control.trigger("slow")

    # When the scheduler starts it
    for _ in range(3):
        group.clock.advance(5)
        scheduler.run_pending()
    assert contexts, "the triggered run did not start"

    # Then the Control shows who runs it, with its fence and attempt
    running = group.control.job("slow")
    assert running.status is JobStatus.RUNNING
    assert running.holder == "host-a:123" == scheduler.instance_id
    assert (running.fence, running.attempt) == (contexts[0].fencing_token, 1)

    # And once it returned, nobody holds it
    release.set()
    assert scheduler.wait_idle(WAIT)
    scheduler.run_pending()
    done = group.control.job("slow")
    assert (done.holder, done.attempt, done.run_count) == (None, 0, 1)
    assert done.status is JobStatus.SCHEDULED


def test_instances_are_the_started_schedulers(group):
    group.scheduler(hourly("a"), instance_id="one")
    group.scheduler(hourly("a"), instance_id="two")
    instances = group.control.instances()
    assert [info.instance_id for info in instances] == ["one", "two"]
    data = instances[0].to_dict()
    assert list(data) == ["instance_id", "host", "pid", "started_at", "last_heartbeat_at",
                          "library_version", "max_concurrent", "running"]
    assert data["running"] == [] and data["max_concurrent"] == 8
    assert isinstance(data["started_at"], str) and data["started_at"].endswith("+00:00")
    assert json.loads(json.dumps(data)) == data


# -- operating it -----------------------------------------------------------------------------


def test_trigger_runs_the_job_once(group):
    # Given a job due only in an hour
    recorder = Recorder()
    scheduler = group.scheduler(hourly("report", recorder))

    # When it is triggered through the Control
    info = group.control.trigger("report")

    # Then the scheduler that has it runs it once, as a manual occurrence
    assert info.name == "report" and info.status is JobStatus.SCHEDULED
    group.settle(scheduler)
    group.settle(scheduler)
    assert [kind for *_, kind in recorder.calls] == ["manual"]
    assert group.control.job("report").run_count == 1


def test_pause_through_control_stops_that_schedulers_runs_until_resumed(group):
    # Given a scheduler running a job, paused through the Control
    recorder = Recorder()
    scheduler = group.scheduler(hourly("report", recorder))
    info = group.control.pause("report")
    assert info.paused and info.status is JobStatus.PAUSED
    assert scheduler.get_job("report").metadata.status is JobStatus.PAUSED

    # When a run is asked for while paused
    group.control.trigger("report")
    group.settle(scheduler)

    # Then nothing runs, until the Control resumes it
    assert recorder.calls == []
    resumed = group.control.resume("report")
    assert not resumed.paused and resumed.status is JobStatus.SCHEDULED
    group.settle(scheduler)
    assert len(recorder.calls) == 1


def test_pause_through_control_stops_regular_occurrences(schedulers):
    # Given a job every 10 s on a scheduler driven by a fake clock
    clock = FakeClock(START)
    backend = MemoryBackend(clock)
    recorder = Recorder()
    scheduler = schedulers.stepped(clock, backend)
    scheduler.register(Job("tick", IntervalSchedule(10), recorder))
    scheduler.start(background=False)
    clock.advance(10)
    step(scheduler)
    assert len(recorder.calls) == 1

    # When a Control pauses it, a minute passes, and it resumes it
    control = Control(backend)
    control.pause("tick")
    for _ in range(6):
        clock.advance(10)
        step(scheduler)
    assert len(recorder.calls) == 1
    control.resume("tick")
    clock.advance(10)
    step(scheduler)
    step(scheduler)

    # Then the missed occurrences coalesced into one run, and it goes on every 10 s
    assert len(recorder.calls) == 2
    clock.advance(10)
    step(scheduler)
    assert len(recorder.calls) == 3


def test_remove_drops_the_job_for_the_whole_group(group):
    recorder = Recorder()
    scheduler = group.scheduler(hourly("report", recorder), hourly("other"))
    group.control.remove("report")
    assert [job.name for job in group.control.jobs()] == ["other"]
    # the scheduler drops it when it next asks for it: at its due time
    group.clock.advance(HOUR)
    group.settle(scheduler)
    with pytest.raises(JobNotFoundError):
        scheduler.get_job("report")
    assert recorder.calls == []
    with pytest.raises(JobNotFoundError):
        group.control.remove("report")


@pytest.mark.parametrize("operation", ["job", "pause", "resume", "trigger", "remove", "history"])
def test_names_the_group_does_not_have_raise_job_not_found(group, operation):
    group.scheduler(hourly("report"))
    with pytest.raises(JobNotFoundError) as caught:
        getattr(group.control, operation)("no-such-job")
    assert caught.value.job_name == "no-such-job"
    assert isinstance(caught.value, KeyError)
    # and nothing of the sort was created
    assert [job.name for job in group.control.jobs()] == ["report"]


def test_the_schedulers_own_management_methods_keep_working_alongside(group):
    scheduler = group.scheduler(hourly("report"))
    scheduler.pause("report")
    assert group.control.job("report").paused
    group.control.resume("report")
    group.settle(scheduler)
    assert scheduler.get_job("report").metadata.status is JobStatus.SCHEDULED
    scheduler.remove("report")
    with pytest.raises(JobNotFoundError):
        group.control.job("report")


def test_an_empty_group_has_no_jobs(group):
    assert group.control.jobs() == []
    assert group.control.history() == []


# -- run history ------------------------------------------------------------------------------


def fails_once() -> Recorder:
    """A handler whose first call raises."""
    def behaviour(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("disk <full>")
    return Recorder(behaviour)


def test_history_shows_each_finished_attempt_newest_first(group):
    # Given a job that fails once and is retried at once
    policy = RetryPolicy(max_retries=1, initial_interval=0.001, strategy=RetryStrategy.FIXED)
    scheduler = group.scheduler(Job("report", IntervalSchedule(HOUR), fails_once(),
                                    retry_policy=policy), instance_id="host-a:1")

    # When it is triggered and both attempts ran
    group.control.trigger("report")
    for _ in range(20):
        group.settle(scheduler)
        if len(group.control.history("report")) == 2:
            break

    # Then the history shows both, newest first, with who ran them and how they ended
    retry, first = group.control.history("report")
    assert (first.attempt, first.kind, first.outcome) == (1, "manual", "failed")
    assert "RuntimeError: disk <full>" in first.error
    assert (retry.attempt, retry.kind, retry.outcome, retry.error) == (2, "retry",
                                                                        "succeeded", "")
    assert first.instance_id == retry.instance_id == "host-a:1"
    assert first.scheduled_at == retry.scheduled_at and first.fence < retry.fence
    assert first.started_at <= retry.started_at and first.duration >= 0
    assert group.control.history() == [retry, first]
    assert group.control.history("report", limit=1) == [retry]
    data = retry.to_dict()
    assert list(data) == ["job", "scheduled_at", "attempt", "kind", "instance_id", "fence",
                          "started_at", "duration", "outcome", "error"]
    assert json.loads(json.dumps(data)) == data and data["started_at"].endswith("+00:00")


def test_a_timed_out_attempt_is_recorded_as_timed_out(group, schedulers):
    def handler(ctx: JobContext) -> None:
        ctx.token.event.wait(WAIT)  # returns once the timeout cancels it

    scheduler = group.scheduler(Job("slow", IntervalSchedule(HOUR), handler, timeout=10))
    group.control.trigger("slow")
    for _ in range(3):
        group.clock.advance(5)
        scheduler.run_pending()
    group.clock.advance(10)
    group.settle(scheduler)
    (entry,) = group.control.history("slow")
    assert (entry.outcome, entry.error) == ("timed_out", "timed out after 10 s")


def abandoned_after_a_shutdown(group: Group, schedulers: Schedulers,
                               name: str = "report") -> Recorder:
    """Trigger ``name``, a job that may not be recovered, on a scheduler ``host-a:1`` that
    stops (handing the occurrence back) while its handler still runs, and let another
    instance, ``host-b:1``, find it and abandon it. Returns the stopped handler's recorder."""
    release = schedulers.event()
    stuck = Recorder(lambda ctx: release.wait(WAIT))
    first = group.scheduler(Job(name, IntervalSchedule(HOUR), stuck, recover=False),
                            instance_id="host-a:1")
    group.control.trigger(name)
    for _ in range(3):
        group.clock.advance(5)
        first.run_pending()
    assert stuck.started.wait(WAIT)
    assert first.stop(timeout=0).still_running == [name]
    rescuer = Recorder()
    second = group.scheduler(Job(name, IntervalSchedule(HOUR), rescuer, recover=False),
                             instance_id="host-b:1")
    group.settle(second)
    assert rescuer.calls == []
    return stuck


def test_an_abandoned_occurrence_is_recorded_as_abandoned(group, schedulers):
    # Given / When a run handed back at shutdown, which another instance abandons
    stuck = abandoned_after_a_shutdown(group, schedulers)

    # Then the history shows the attempt that stopped, as abandoned
    (entry,) = group.control.history("report")
    assert (entry.attempt, entry.kind, entry.instance_id, entry.outcome, entry.duration) == (
        1, "manual", "host-a:1", "abandoned", 0.0)
    assert entry.error == ABANDONED_ERROR
    (_, scheduled_at, _, fence, _), = stuck.calls  # and it never ran again
    assert (entry.scheduled_at, entry.fence) == (scheduled_at, fence)
    assert group.control.history() == [entry]
    info = group.control.job("report")
    assert (info.run_count, info.failure_count, info.last_error) == (0, 1, ABANDONED_ERROR)


def test_history_is_kept_to_the_configured_limit(group):
    scheduler = group.scheduler(hourly("report"), history_limit=2)
    for _ in range(3):
        group.control.trigger("report")
        group.settle(scheduler)
    assert group.control.job("report").run_count == 3
    assert len(group.control.history("report")) == 2


def test_history_limit_zero_keeps_none(group):
    scheduler = group.scheduler(hourly("report"), history_limit=0)
    group.control.trigger("report")
    group.settle(scheduler)
    assert group.control.job("report").run_count == 1
    assert group.control.history("report") == [] and group.control.history() == []


def test_the_group_history_spans_jobs_and_removal_drops_a_jobs_part(group):
    scheduler = group.scheduler(hourly("a"), hourly("b"))
    for name in ("a", "b"):
        group.control.trigger(name)
        group.settle(scheduler)
    assert [entry.job for entry in group.control.history()] == ["b", "a"]
    group.control.remove("a")
    assert [entry.job for entry in group.control.history()] == ["b"]


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_history_refuses_a_bad_limit(limit):
    with pytest.raises(ValueError, match="limit"):
        Control(MemoryBackend()).history(None, limit)


def test_a_backend_without_history_has_none_to_show():
    class NoHistory(MemoryBackend):
        def history(self, name, limit):
            raise NotImplementedError

    assert Control(NoHistory()).history() == []


# -- lifecycle --------------------------------------------------------------------------------


class Closing(MemoryBackend):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_control_never_closes_a_backend_passed_in():
    backend = Closing()
    with Control(backend) as control:
        assert control.jobs() == []
    control.close()
    assert backend.closed == 0


@pytest.mark.redis
def test_from_url_owns_its_client_and_closes_it(redis_server):
    observer = redis_server.client()

    def others() -> int:  # connections to the server but the observer's
        return len(observer.client_list()) - 1

    try:
        with Control.from_url(redis_server.url, key_prefix="ctl") as control:
            assert control.jobs() == []
            assert others() >= 1
        assert others() == 0
    finally:
        observer.close()


def test_from_url_refuses_a_malformed_url():
    with pytest.raises(ConfigError, match="redis_url"):
        Control.from_url("localhost:6379")
    with pytest.raises(ConfigError, match="key_prefix"):
        Control.from_url("redis://localhost:6379", key_prefix="")


# -- what the backend stores is untrusted ---------------------------------------------------


@pytest.mark.parametrize("description, text", [
    ({"type": "cron", "expr": "*/5 * * * *", "tz": "UTC"}, "cron */5 * * * * (UTC)"),
    ({"type": "interval", "every": 30.0, "start_at": None}, "every 30s"),
    ({"type": "interval", "every": 90, "start_at": None}, "every 90s"),
    ({"type": "interval", "every": 120.0, "start_at": "2030-01-01T00:00:00+00:00"},
     "every 2m from 2030-01-01T00:00:00+00:00"),
    ({"type": "interval", "every": 0.5}, "every 0.5s"),
    ({"type": "interval", "every": 172800}, "every 2d"),
    ({"type": "once", "run_at": "2030-01-01T00:00:00+00:00"},
     "once at 2030-01-01T00:00:00+00:00"),
    ({"type": "MySchedule()"}, "MySchedule()"),
    ({"type": "interval", "every": True}, "interval"),
    ({"type": 3}, "unknown"),
    ("cron", "unknown"),
    (None, "unknown"),
])
def test_describe_schedule(description, text):
    assert describe_schedule(description) == text


def test_a_foreign_owner_token_reads_as_its_own_holder():
    state = JobState("j", None, None, False, 7, occurrence_status="running",
                     occurrence_scheduled_ms=0, occurrence_attempt=2, owner="someone else")
    info = JobInfo.from_state(state)
    assert (info.holder, info.fence, info.attempt) == ("someone else", 7, 2)
