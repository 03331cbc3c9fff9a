"""The scheduler loop, driven step by step under a fake clock."""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import timedelta

import pytest

from pyscheduler import (
    DuplicateJobError,
    FakeClock,
    IntervalSchedule,
    Job,
    JobCancelled,
    JobContext,
    JobNotFoundError,
    JobStatus,
    MemoryBackend,
    OnceSchedule,
    RetryPolicy,
    RetryStrategy,
    Scheduler,
    SchedulerStateError,
)
from pyscheduler.executor import TIMEOUT_GRACE

from .helpers import START, WAIT, MetricsRecorder, Recorder, Schedulers, step


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def test_interval_job_runs_at_each_occurrence_without_drift(clock, schedulers):
    # Given a job every 10 s registered at START
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("tick", IntervalSchedule(10), recorder))
    scheduler.start(background=False)

    # When time reaches the first occurrence late by 3 s, and then the next one on time
    step(scheduler)
    assert recorder.calls == []
    clock.advance(13)
    step(scheduler)
    clock.advance(7)
    step(scheduler)

    # Then each ran once at its nominal time, not drifting by the 3 s of lateness
    assert [at for _, at, *_ in recorder.calls] == [START + timedelta(seconds=10),
                                                    START + timedelta(seconds=20)]
    meta = scheduler.get_job("tick").metadata
    assert meta.run_count == 2
    assert meta.next_run_at == START + timedelta(seconds=30)
    assert meta.status is JobStatus.SCHEDULED


def test_handler_without_arguments_is_called(clock, schedulers):
    calls = []
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("bare", IntervalSchedule(1), lambda: calls.append(1)))
    scheduler.start(background=False)
    clock.advance(1)
    step(scheduler)
    assert calls == [1]


def test_context_carries_occurrence_attempt_and_increasing_fences(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("ctx", IntervalSchedule(1), recorder))
    scheduler.start(background=False)
    for _ in range(5):
        clock.advance(1)
        step(scheduler)
    fences = [fence for *_, fence, _kind in recorder.calls]
    assert len(fences) == 5
    assert fences == sorted(set(fences))
    ctx = recorder.contexts[0]
    assert ctx.scheduled_at.tzinfo is not None and ctx.attempt == 1 and ctx.kind == "regular"


def test_failed_attempts_retry_from_the_backend_then_count_as_one_failure(clock, schedulers):
    # Given a handler that always fails, retried twice with a fixed 2 s backoff
    def fail(ctx: JobContext) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    recorder = Recorder(fail)
    metrics = MetricsRecorder()
    scheduler = schedulers.stepped(clock, metrics=metrics)
    policy = RetryPolicy(max_retries=2, initial_interval=2, strategy=RetryStrategy.FIXED)
    scheduler.register(Job("flaky", IntervalSchedule(60), recorder, retry_policy=policy))
    scheduler.start(background=False)

    # When the occurrence comes and each retry's delay passes
    clock.advance(60)
    step(scheduler)
    clock.advance(1)
    step(scheduler)  # not yet: the retry is due 2 s after the failure
    assert len(recorder.calls) == 1
    clock.advance(1)
    step(scheduler)
    clock.advance(2)
    step(scheduler)

    # Then three attempts of the same occurrence ran, and the run counts as one failure
    assert [(at, attempt) for _, at, attempt, *_ in recorder.calls] == [
        (START + timedelta(seconds=60), 1), (START + timedelta(seconds=60), 2),
        (START + timedelta(seconds=60), 3)]
    meta = scheduler.get_job("flaky").metadata
    assert meta.failure_count == 1 and meta.consecutive_failures == 1
    assert meta.last_error == "ValueError: boom 3"
    assert meta.next_run_at == START + timedelta(seconds=120)
    assert metrics.names().count("job_retried") == 2
    assert metrics.names().count("job_failed") == 3

    # And the regular schedule goes on
    clock.advance(56)
    step(scheduler)
    assert recorder.calls[-1][1:3] == (START + timedelta(seconds=120), 1)


def test_success_resets_consecutive_failures(clock, schedulers):
    outcomes = iter([ValueError("x"), ValueError("y"), None])

    def handler() -> None:
        error = next(outcomes)
        if error:
            raise error

    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("j", IntervalSchedule(10), handler))
    scheduler.start(background=False)
    for _ in range(2):
        clock.advance(10)
        step(scheduler)
    assert scheduler.get_job("j").metadata.consecutive_failures == 2
    clock.advance(10)
    step(scheduler)
    meta = scheduler.get_job("j").metadata
    assert meta.consecutive_failures == 0 and meta.failure_count == 2 and meta.run_count == 3
    assert meta.last_success_at == START + timedelta(seconds=30)


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit(),
                                   JobCancelled("self"), RuntimeError("bad")])
def test_any_exception_is_isolated_and_recorded(clock, error, caplog, schedulers):
    def handler() -> None:
        raise error

    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("bad", IntervalSchedule(5), handler))
    scheduler.start(background=False)
    for _ in range(2):
        clock.advance(5)
        step(scheduler)
    meta = scheduler.get_job("bad").metadata
    assert meta.run_count == 2 and meta.failure_count == 2
    assert meta.last_error.startswith(type(error).__name__)
    # The traceback reached the log.
    assert any(r.exc_info and r.exc_info[1] is error for r in caplog.records)


def test_timeout_cancels_the_token_records_failure_and_retries(clock, schedulers):
    # Given a cooperative handler that sleeps on its token, with a 5 s timeout
    woke_early = []

    def sleeper(ctx: JobContext) -> None:
        woke_early.append(not ctx.sleep(100))

    recorder = Recorder(sleeper)
    metrics = MetricsRecorder()
    scheduler = schedulers.stepped(clock, metrics=metrics)
    policy = RetryPolicy(max_retries=1, initial_interval=1, strategy=RetryStrategy.FIXED)
    scheduler.register(Job("slow", IntervalSchedule(60), recorder, timeout=5, retry_policy=policy))
    scheduler.start(background=False)
    clock.advance(60)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)

    # When the timeout passes
    clock.advance(5)
    step(scheduler)

    # Then the token was cancelled, the attempt failed as timed out, and a retry is pending
    assert woke_early == [True]
    assert recorder.contexts[0].cancel_reason.startswith("timed out")
    meta = scheduler.get_job("slow").metadata
    assert "timed out" in meta.last_error
    assert "job_timed_out" in metrics.names()
    clock.advance(1)
    scheduler.run_pending()
    clock.advance(5)  # the retry times out too
    step(scheduler)
    assert [attempt for _, _, attempt, *_ in recorder.calls] == [1, 2]
    assert scheduler.get_job("slow").metadata.failure_count == 1


def test_a_handler_ignoring_cancellation_keeps_its_slot_busy(clock, schedulers):
    # Given one worker, and a handler that ignores its token
    release = schedulers.event()
    stuck = Recorder(lambda ctx: release.wait(WAIT))
    other = Recorder()
    scheduler = schedulers.stepped(clock, max_concurrent=1)
    scheduler.register(Job("stuck", IntervalSchedule(10), stuck, timeout=1))
    scheduler.register(Job("other", IntervalSchedule(10, start_at=START + timedelta(seconds=11)),
                           other))
    scheduler.start(background=False)
    clock.advance(10)
    scheduler.run_pending()
    assert stuck.started.wait(WAIT)

    # When it times out, its token is cancelled, and once it ignored that for the grace
    # period, the failure is recorded without it...
    clock.advance(1)
    scheduler.run_pending()
    assert stuck.contexts[0].cancelled
    assert scheduler.get_job("stuck").metadata.last_error == ""
    clock.advance(TIMEOUT_GRACE)
    scheduler.run_pending()
    assert "timed out" in scheduler.get_job("stuck").metadata.last_error
    assert scheduler.executor.free_slots() == 0

    # ...but no other job starts while its thread is still busy
    clock.advance(1)
    scheduler.run_pending()
    assert other.calls == []

    # Then once it returns, the slot is free again
    release.set()
    assert scheduler.wait_idle(WAIT)
    step(scheduler)
    assert len(other.calls) == 1


def test_the_retry_of_a_handler_that_ignored_its_timeout_waits_for_its_lease(clock, schedulers):
    # Given a handler that ignores its cancelled token, then fails; retried after 1 s
    release = schedulers.event()

    def ignore_then_fail(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            release.wait(WAIT)
            raise RuntimeError("failed late")

    recorder = Recorder(ignore_then_fail)
    policy = RetryPolicy(max_retries=1, initial_interval=1, strategy=RetryStrategy.FIXED)
    scheduler = schedulers.stepped(clock, lock_ttl=30, lock_refresh_interval=10)
    scheduler.register(Job("stuck", IntervalSchedule(100), recorder, timeout=1,
                           retry_policy=policy))
    scheduler.start(background=False)
    clock.advance(100)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)
    # When it times out and ignores that past the grace period
    clock.advance(1)
    scheduler.run_pending()
    clock.advance(TIMEOUT_GRACE)
    scheduler.run_pending()
    # Then no retry starts after the backoff, while the handler may still run...
    clock.advance(5)
    scheduler.run_pending()
    assert len(recorder.calls) == 1
    # ...and once it failed late, that is only logged; the retry starts when the lease ran out
    release.set()
    assert scheduler.wait_idle(WAIT)
    clock.advance(30 - 1 - TIMEOUT_GRACE - 5)
    step(scheduler)
    assert [(attempt, kind) for _, _, attempt, _, kind in recorder.calls] == \
        [(1, "regular"), (2, "retry")]
    assert "timed out" in scheduler.get_job("stuck").metadata.last_error


def test_missed_occurrences_coalesce_into_one_run(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("coalesced", IntervalSchedule(10), recorder))
    scheduler.start(background=False)

    # When the process was "away" for ten intervals
    clock.advance(100)
    step(scheduler)
    step(scheduler)

    # Then one run covers them, at the latest missed occurrence
    assert [at for _, at, *_ in recorder.calls] == [START + timedelta(seconds=100)]
    assert scheduler.get_job("coalesced").metadata.next_run_at == START + timedelta(seconds=110)


def test_occurrence_later_than_misfire_grace_is_skipped(clock, schedulers):
    recorder = Recorder()
    metrics = MetricsRecorder()
    scheduler = schedulers.stepped(clock, metrics=metrics)
    scheduler.register(Job("strict", IntervalSchedule(10), recorder, misfire_grace_time=5))
    scheduler.start(background=False)

    clock.advance(107)  # the latest occurrence (100 s) is 7 s late
    step(scheduler)
    step(scheduler)
    assert recorder.calls == []
    assert ("job_skipped", ("strict", "misfired")) in metrics.events
    assert scheduler.get_job("strict").metadata.next_run_at == START + timedelta(seconds=110)

    clock.advance(5)  # 112 s: the 110 s occurrence is 2 s late, within grace
    step(scheduler)
    assert [at for _, at, *_ in recorder.calls] == [START + timedelta(seconds=110)]


def test_config_misfire_grace_applies_to_jobs_without_their_own(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock, misfire_grace_time=1)
    scheduler.register(Job("j", IntervalSchedule(10), recorder))
    scheduler.start(background=False)
    clock.advance(15)
    step(scheduler)
    assert recorder.calls == []


def test_once_job_completes_and_a_past_run_time_runs_once(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("past", OnceSchedule(START - timedelta(hours=1)), recorder))
    scheduler.register(Job("future", OnceSchedule(START + timedelta(seconds=5)), recorder))
    scheduler.start(background=False)
    step(scheduler)
    clock.advance(5)
    step(scheduler)
    clock.advance(60)
    step(scheduler)
    assert sorted(name for name, *_ in recorder.calls) == ["future", "past"]
    for name in ("past", "future"):
        meta = scheduler.get_job(name).metadata
        assert meta.status is JobStatus.COMPLETED and meta.next_run_at is None


def test_once_job_that_fails_for_good_is_failed(clock, schedulers):
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("once", OnceSchedule(START), lambda: 1 / 0))
    scheduler.start(background=False)
    step(scheduler)
    meta = scheduler.get_job("once").metadata
    assert meta.status is JobStatus.FAILED
    assert meta.last_error.startswith("ZeroDivisionError")


def test_pause_resume_and_remove(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("j", IntervalSchedule(10), recorder))
    scheduler.start(background=False)

    scheduler.pause("j")
    assert scheduler.get_job("j").metadata.status is JobStatus.PAUSED
    clock.advance(30)
    step(scheduler)
    assert recorder.calls == []

    scheduler.resume("j")
    step(scheduler)
    assert [at for _, at, *_ in recorder.calls] == [START + timedelta(seconds=30)]

    scheduler.remove("j")
    with pytest.raises(JobNotFoundError):
        scheduler.get_job("j")
    assert scheduler.backend.job_names() == []
    clock.advance(10)
    step(scheduler)
    assert len(recorder.calls) == 1


def test_disabled_job_is_registered_paused(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("off", IntervalSchedule(1), recorder, enabled=False))
    scheduler.start(background=False)
    clock.advance(5)
    step(scheduler)
    assert recorder.calls == []
    assert scheduler.get_job("off").metadata.status is JobStatus.PAUSED
    scheduler.resume("off")
    step(scheduler)
    assert len(recorder.calls) == 1


def test_management_before_start_is_applied_at_start(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("j", IntervalSchedule(100), recorder))
    scheduler.pause("j")
    scheduler.resume("j")
    scheduler.run_now("j")
    scheduler.start(background=False)
    step(scheduler)
    assert [kind for *_, kind in recorder.calls] == ["manual"]


def test_run_now_adds_an_occurrence_and_keeps_the_schedule(clock, schedulers):
    recorder = Recorder()
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("j", IntervalSchedule(100), recorder))
    scheduler.start(background=False)
    clock.advance(3)
    scheduler.run_now("j")
    step(scheduler)
    assert [(at, kind) for _, at, _, _, kind in recorder.calls] == [
        (START + timedelta(seconds=3), "manual")]
    assert scheduler.get_job("j").metadata.next_run_at == START + timedelta(seconds=100)


def test_unknown_names_raise_job_not_found(clock, schedulers):
    scheduler = schedulers.stepped(clock)
    scheduler.start(background=False)
    for call in (scheduler.pause, scheduler.resume, scheduler.remove, scheduler.get_job,
                 scheduler.run_now):
        with pytest.raises(JobNotFoundError) as info:
            call("nope")
        assert isinstance(info.value, KeyError)
        assert "nope" in str(info.value)


def test_duplicate_names_and_lifecycle_errors(clock, schedulers):
    scheduler = schedulers.stepped(clock)
    scheduler.register(Job("j", IntervalSchedule(1), lambda: None))
    with pytest.raises(DuplicateJobError, match="'j'"):
        scheduler.register(Job("j", IntervalSchedule(2), lambda: None))
    scheduler.start(background=False)
    with pytest.raises(SchedulerStateError):
        scheduler.start(background=False)
    assert scheduler.stop().still_running == []
    assert scheduler.stop().still_running == []  # idempotent
    with pytest.raises(SchedulerStateError):
        scheduler.start()


def test_two_schedulers_on_one_backend_never_run_an_occurrence_twice(clock, schedulers):
    # Given two schedulers sharing one backend, each with the same 200 jobs every second
    backend = MemoryBackend(clock)
    recorder = Recorder()
    pair = [schedulers.stepped(clock, backend, max_concurrent=64, instance_id=f"s{i}")
            for i in range(2)]
    for scheduler in pair:
        for n in range(200):
            scheduler.register(Job(f"job-{n}", IntervalSchedule(1, start_at=START), recorder))
        scheduler.start(background=False)

    # When both tick, interleaved, for 20 seconds (with their refresher's steps, whose
    # heartbeats tell each which jobs the other claims on time)
    for _ in range(20):
        clock.advance(1)
        for scheduler in pair:
            scheduler.refresh_leases()
        for _ in range(5):
            for scheduler in pair:
                scheduler.run_pending()
        for scheduler in pair:
            assert scheduler.wait_idle(WAIT)

    # Then every occurrence ran exactly once, shared between the two
    counts = recorder.occurrences()
    assert set(counts.values()) == {1}
    expected = {(f"job-{n}", START + timedelta(seconds=s)) for n in range(200)
                for s in range(1, 21)}
    assert set(counts) == expected


def test_threads_on_two_schedulers_run_each_occurrence_once(clock, schedulers):
    # Given two started schedulers (real tick threads) on one backend, driven by a fake clock
    backend = MemoryBackend(clock)
    done = threading.Semaphore(0)
    recorder = Recorder(lambda ctx: done.release())
    pair = [schedulers.stepped(clock, backend, max_concurrent=16, instance_id=f"t{i}")
            for i in range(2)]
    for scheduler in pair:
        for n in range(50):
            scheduler.register(Job(f"job-{n}", IntervalSchedule(1, start_at=START), recorder))
        scheduler.start()

    # When the clock moves second by second
    for _ in range(5):
        clock.advance(1)
        for _ in range(50):
            assert done.acquire(timeout=WAIT)

    # Then each occurrence ran once
    for scheduler in pair:
        scheduler.stop()
    counts = recorder.occurrences()
    assert len(counts) == 250 and set(counts.values()) == {1}


def test_register_after_start_wakes_the_tick_thread(schedulers):
    # Given a started scheduler with a long tick interval, on the real clock
    from pyscheduler import Scheduler, SchedulerConfig

    ran = threading.Event()
    scheduler = schedulers(Scheduler(config=SchedulerConfig(tick_interval=3600, lock_ttl=7200,
                                                            lock_refresh_interval=3000)))
    scheduler.start()

    # When a job due in 10 ms is registered
    scheduler.register(Job("soon", IntervalSchedule(0.01), lambda: ran.set()))

    # Then it runs well before the tick interval
    assert ran.wait(WAIT)


def test_stop_waits_then_cancels_stuck_handlers_and_hands_them_back(clock, schedulers):
    # Given a handler that ignores cancellation, and a second scheduler on the same backend
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    backend = MemoryBackend(clock)
    first = schedulers.stepped(clock, backend, instance_id="first")
    first.register(Job("stuck", IntervalSchedule(10), recorder))
    first.start(background=False)
    clock.advance(10)
    first.run_pending()
    assert recorder.started.wait(WAIT)

    # When stop(timeout=5) runs and 5 s pass
    reports = []
    stopper = threading.Thread(target=lambda: reports.append(first.stop(timeout=5)))
    stopper.start()
    while not first._stopping:  # the stopper reached its wait
        threading.Event().wait(0.001)
    clock.advance(5)
    stopper.join(WAIT)

    # Then the report names the stuck job, its token is cancelled...
    assert reports[0].still_running == ["stuck"]
    assert recorder.contexts[0].cancelled
    # ...and another instance recovers the occurrence at once, as attempt 2 with a higher fence
    second_recorder = Recorder()
    second = schedulers.stepped(clock, backend, instance_id="second")
    second.register(Job("stuck", IntervalSchedule(10), second_recorder))
    second.start(background=False)
    step(second)
    (name, at, attempt, fence, kind), = second_recorder.calls
    assert (at, attempt, kind) == (START + timedelta(seconds=10), 2, "recovery")
    assert fence > recorder.calls[0][3]
    release.set()


def test_lost_lease_cancels_the_token_and_the_late_finish_is_rejected(clock, schedulers):
    # Given a run whose refresher stops being able to reach the backend in time
    release = schedulers.event()
    first_run = Recorder(lambda ctx: release.wait(WAIT))
    metrics = MetricsRecorder()
    backend = MemoryBackend(clock)
    first = schedulers.stepped(clock, backend, instance_id="a", lock_ttl=3,
                               lock_refresh_interval=1, metrics=metrics)
    first.register(Job("j", IntervalSchedule(100), first_run))
    first.start(background=False)
    clock.advance(100)
    first.run_pending()
    assert first_run.started.wait(WAIT)

    # When its lease deadline passes without a refresh
    clock.advance(3)
    first.refresh_leases()

    # Then its token is cancelled and lock_lost reported
    assert first_run.contexts[0].cancelled
    assert "lease lost" in first_run.contexts[0].cancel_reason
    assert "lock_lost" in metrics.names()

    # And a second instance takes over with a higher fence; the old finish is dropped
    second_run = Recorder()
    second = schedulers.stepped(clock, backend, instance_id="b", lock_ttl=3,
                                lock_refresh_interval=1)
    second.register(Job("j", IntervalSchedule(100), second_run))
    second.start(background=False)
    step(second)
    assert second_run.calls[0][2:] == (2, second_run.calls[0][3], "recovery")
    assert second_run.calls[0][3] > first_run.calls[0][3]
    release.set()
    assert first.wait_idle(WAIT)
    meta = second.get_job("j").metadata
    assert meta.run_count == 1 and meta.last_error == ""


def test_refresh_keeps_a_long_run_alive(clock, schedulers):
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = schedulers.stepped(clock, lock_ttl=3, lock_refresh_interval=1)
    scheduler.register(Job("long", IntervalSchedule(100), recorder))
    scheduler.start(background=False)
    clock.advance(100)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)
    for _ in range(10):
        clock.advance(1)
        scheduler.refresh_leases()
    assert not recorder.contexts[0].cancelled
    release.set()
    assert scheduler.wait_idle(WAIT)
    assert scheduler.get_job("long").metadata.run_count == 1


def test_another_schedulers_removal_drops_the_job_here(clock, schedulers):
    backend = MemoryBackend(clock)
    a, b = (schedulers.stepped(clock, backend, instance_id=n) for n in "ab")
    for scheduler in (a, b):
        scheduler.register(Job("j", IntervalSchedule(10), lambda: None))
        scheduler.start(background=False)
    a.remove("j")
    clock.advance(10)
    step(b)
    clock.advance(10)
    step(b)
    with pytest.raises(JobNotFoundError):
        b.get_job("j")


def test_registration_takes_over_stored_state(clock, schedulers):
    backend = MemoryBackend(clock)
    a = schedulers.stepped(clock, backend, instance_id="a")
    a.register(Job("j", IntervalSchedule(10), lambda: None))
    a.start(background=False)
    a.pause("j")
    clock.advance(25)
    b = schedulers.stepped(clock, backend, instance_id="b")
    b.register(Job("j", IntervalSchedule(10), lambda: None))
    b.start(background=False)
    meta = b.get_job("j").metadata
    assert meta.status is JobStatus.PAUSED
    assert meta.next_run_at == START + timedelta(seconds=10)


def test_decorators_register_jobs(clock, schedulers):
    scheduler = schedulers.stepped(clock)

    @scheduler.every(timedelta(seconds=5), name="every")
    def every() -> None: ...

    @scheduler.cron("*/5 * * * *")
    def cron() -> None: ...

    @scheduler.once(START + timedelta(minutes=1), name="once", timeout=3)
    def once() -> None: ...

    names = [job.name for job in scheduler.jobs()]
    assert names == sorted(["every", f"{__name__}.test_decorators_register_jobs.<locals>.cron",
                            "once"])
    assert scheduler.get_job("once").timeout == 3


def test_broken_metrics_hooks_never_stop_jobs(clock, caplog, schedulers):
    class Broken(MetricsRecorder):
        def job_started(self, name: str) -> None:
            raise RuntimeError("exporter down")

    recorder = Recorder()
    scheduler = schedulers.stepped(clock, metrics=Broken())
    scheduler.register(Job("j", IntervalSchedule(1), recorder))
    scheduler.start(background=False)
    for _ in range(3):
        clock.advance(1)
        step(scheduler)
    assert len(recorder.calls) == 3
    assert "metrics.job_started raised" in caplog.text


def test_context_manager_starts_and_stops():
    from pyscheduler import Scheduler

    ran = threading.Event()
    with Scheduler() as scheduler:
        scheduler.register(Job("j", IntervalSchedule(0.01), lambda: ran.set()))
        assert ran.wait(WAIT)
    with pytest.raises(SchedulerStateError):
        scheduler.start()


def test_nothing_starts_before_start(schedulers):
    from pyscheduler import Scheduler

    # Threads left by earlier tests may end meanwhile: compare the new threads, not counts.
    before = set(threading.enumerate())
    scheduler = schedulers(Scheduler())
    scheduler.register(Job("j", IntervalSchedule(1), lambda: None))
    assert set(threading.enumerate()) - before == set()
    scheduler.start()
    started = {thread.name for thread in set(threading.enumerate()) - before}
    assert {"pyscheduler-tick", "pyscheduler-refresher", "pyscheduler-lease-watchdog"} <= started


def test_bad_registrations_raise_our_errors(clock, schedulers):
    from pyscheduler import InvalidJobError

    scheduler = schedulers.stepped(clock)
    with pytest.raises(InvalidJobError, match="takes a Job"):
        scheduler.register("not a job")
    with pytest.raises(InvalidJobError, match="timout"):
        scheduler.every(5, timout=3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads running
def test_a_forked_child_holds_a_stopped_copy_that_neither_waits_nor_hands_back(clock, schedulers):
    # Given a started scheduler with a run in flight that ignores cancellation
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    backend = MemoryBackend(clock)
    scheduler = schedulers.stepped(clock, backend)
    scheduler.register(Job("j", IntervalSchedule(10), recorder))
    scheduler.start(background=False)
    clock.advance(10)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)

    # When the process forks, and the child stops its copy without a deadline
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what stop() returned, then leave at once
        try:
            signal.alarm(int(WAIT))  # a hang kills the child, which fails the test
            report = scheduler.stop()
            os.write(write, repr(report.still_running).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 1000).decode()
    os.close(read)

    # Then the child's stop() returned at once, with nothing to hand back
    assert status == 0 and answer == "[]"
    # and the parent's run is untouched
    release.set()
    assert scheduler.wait_idle(WAIT)
    assert scheduler.get_job("j").metadata.run_count == 1


# -- workers claiming for themselves (background mode) ----------------------------------------

class ClaimThreads(MemoryBackend):
    """A MemoryBackend noting which thread made each claim."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.threads: list[str] = []

    def claim(self, instance_id, requests, lease_ms, peek):
        self.threads.append(threading.current_thread().name)
        return super().claim(instance_id, requests, lease_ms, peek)


class TickWaits(FakeClock):
    """A FakeClock noting how long the tick thread asks to sleep each time."""

    def __init__(self, start) -> None:
        super().__init__(start)
        self.tick_waits: list[float] = []
        self.waited = threading.Condition()

    def wait(self, event, timeout):
        if threading.current_thread().name == "pyscheduler-tick":
            with self.waited:
                self.tick_waits.append(timeout)
                self.waited.notify_all()
        return super().wait(event, timeout)

    def wait_for_tick_sleep(self, seconds: float) -> bool:
        """Wait until the tick goes to sleep for ``seconds``, then forget its sleeps so far."""
        with self.waited:
            found = self.waited.wait_for(
                lambda: any(abs(w - seconds) < 1e-6 for w in self.tick_waits), WAIT)
            self.tick_waits.clear()
            return found


def run_burst(schedulers: Schedulers, clock: FakeClock, backend: MemoryBackend,
              jobs: int = 40, workers: int = 2) -> tuple[Scheduler, Recorder]:
    """Start a scheduler with ``jobs`` one-time jobs due in a second, on ``workers`` workers;
    move the clock to their instant and wait until every one of them has started."""
    done = threading.Semaphore(0)
    recorder = Recorder(lambda ctx: done.release())
    scheduler = schedulers.stepped(clock, backend, max_concurrent=workers)
    for n in range(jobs):
        scheduler.register(Job(f"job-{n}", OnceSchedule(START + timedelta(seconds=1)), recorder))
    scheduler.start()
    clock.advance(1)
    for _ in range(jobs):
        assert done.acquire(timeout=WAIT)
    return scheduler, recorder


def test_freed_workers_claim_the_rest_of_a_burst_themselves(clock, schedulers):
    # Given two workers and 40 one-time jobs due at the same instant, on a started scheduler
    # whose tick would sleep a whole tick interval once both workers are busy
    backend = ClaimThreads(clock)

    # When the instant comes (and the clock stands still after it)
    scheduler, recorder = run_burst(schedulers, clock, backend)

    # Then every job ran once: the workers claimed the occurrences the tick had no slot for
    scheduler.stop()
    counts = recorder.occurrences()
    assert len(counts) == 40 and set(counts.values()) == {1}
    workers = [name for name in backend.threads if name.startswith("pyscheduler-worker")]
    assert len(workers) >= 19  # two at a time: the tick claimed at most the first pair


def test_a_freed_worker_wakes_the_tick_for_work_due_before_it_would_wake(schedulers):
    # Given one worker busy with a job, so that the tick sleeps a whole tick interval (5 s),
    # and another job due 2 s after the busy one started
    clock = TickWaits(START)
    release = schedulers.event()
    busy = Recorder(lambda ctx: release.wait(WAIT))
    later = Recorder()
    scheduler = schedulers.stepped(clock, max_concurrent=1)
    scheduler.register(Job("busy", OnceSchedule(START + timedelta(seconds=1)), busy))
    scheduler.register(Job("later", OnceSchedule(START + timedelta(seconds=3)), later))
    scheduler.start()
    clock.advance(1)
    assert busy.started.wait(WAIT)
    assert clock.wait_for_tick_sleep(5.0)

    # When the busy job returns a second later, with nothing due yet
    clock.advance(1)
    release.set()

    # Then the tick is woken to sleep only until the later job is due, and runs it then
    assert clock.wait_for_tick_sleep(1.0)
    clock.advance(1)
    assert later.started.wait(WAIT)
    scheduler.stop()
    assert [call[0] for call in busy.calls + later.calls] == ["busy", "later"]


def test_a_run_started_by_a_worker_still_times_out_on_time(schedulers):
    # Given one worker, a job that times out after 2 s, and a tick asleep for its whole
    # interval while the first job runs
    clock = TickWaits(START)
    release = schedulers.event()
    first = Recorder(lambda ctx: release.wait(WAIT))
    cancelled = threading.Event()

    def slow(ctx: JobContext) -> None:
        if ctx.token.event.wait(WAIT):
            cancelled.set()

    scheduler = schedulers.stepped(clock, max_concurrent=1)
    scheduler.register(Job("first", OnceSchedule(START + timedelta(seconds=1)), first))
    scheduler.register(Job("slow", OnceSchedule(START + timedelta(seconds=1)), slow,
                           timeout=2))
    scheduler.start()
    clock.advance(1)
    assert first.started.wait(WAIT)
    assert clock.wait_for_tick_sleep(5.0)

    # When the first job returns and its worker starts the slow one itself
    release.set()

    # Then the tick is woken to sleep only until the slow job's deadline, and cancels it then
    assert clock.wait_for_tick_sleep(2.0)
    clock.advance(2)
    assert cancelled.wait(WAIT)


def test_no_state_object_per_job_stays_for_the_garbage_collector_to_track(clock, schedulers):
    # Given 50 jobs that each ran (a state snapshot and a claim per job passed through)
    import gc

    from pyscheduler.backends.base import Claim, JobState

    recorder = Recorder()
    scheduler = schedulers.stepped(clock, max_concurrent=64)
    for n in range(50):
        scheduler.register(Job(f"gc-probe-{n}", IntervalSchedule(1, start_at=START), recorder))
    scheduler.start(background=False)
    clock.advance(1)
    step(scheduler)
    assert len(recorder.calls) == 50

    # When the collector has looked at what is left
    gc.collect()

    # Then what the scheduler and the backend keep per job is plain values the collector no
    # longer tracks (a tracked object per job and run makes full collections frequent)
    # type(), not isinstance(): a lazy proxy left by another test (Django's settings) would
    # resolve itself when asked for its __class__.
    kept = [obj for obj in gc.get_objects() if type(obj) in (JobState, Claim)
            and getattr(obj, "name", getattr(obj, "job_name", "")).startswith("gc-probe-")]
    assert kept == []
    assert scheduler.get_job("gc-probe-0").metadata.run_count == 1


def test_a_worker_whose_claim_fails_leaves_the_retry_to_the_tick(clock, caplog, schedulers):
    # Given one worker busy with a job, another job due, and a backend about to fail
    from pyscheduler import BackendUnavailableError

    class Flaky(MemoryBackend):
        failing = False
        failed = threading.Event()

        def claim(self, instance_id, requests, lease_ms, peek):
            if self.failing:
                self.failed.set()
                raise BackendUnavailableError("backend down for the test")
            return super().claim(instance_id, requests, lease_ms, peek)

    backend = Flaky(clock)
    release = schedulers.event()
    first = Recorder(lambda ctx: release.wait(WAIT))
    second = Recorder()
    scheduler = schedulers.stepped(clock, backend, max_concurrent=1)
    scheduler.register(Job("first", OnceSchedule(START + timedelta(seconds=1)), first))
    scheduler.register(Job("second", OnceSchedule(START + timedelta(seconds=1)), second))
    scheduler.start()
    clock.advance(1)
    assert first.started.wait(WAIT)

    # When the busy job returns while the backend is down (its worker's claim fails) ...
    backend.failing = True
    with caplog.at_level(logging.ERROR, logger="pyscheduler"):
        release.set()
        assert backend.failed.wait(WAIT)
        # ... and the backend comes back, while the tick backs off on the fake clock
        backend.failing = False
        for _ in range(100):
            clock.advance(1)
            if second.started.wait(WAIT / 100):
                break

    # Then the failure was logged, and the tick claimed the other job once it could
    assert "claiming for a free worker failed" in caplog.text or \
        "tick failed" in caplog.text
    assert [call[0] for call in second.calls] == ["second"]


def test_a_freed_worker_records_its_result_with_its_next_claim(clock, schedulers):
    # Given two workers, 40 one-time jobs due at once, and a backend counting its calls
    class Counting(MemoryBackend):
        def __init__(self, clock: FakeClock) -> None:
            super().__init__(clock)
            self.combined_outcomes: list[int] = []

        def finish_and_claim(self, outcomes, instance_id, requests, lease_ms, peek):
            self.combined_outcomes.append(len(outcomes))
            return super().finish_and_claim(outcomes, instance_id, requests, lease_ms, peek)

    backend = Counting(clock)

    # When the instant comes and every job has run
    scheduler, _ = run_burst(schedulers, clock, backend)
    assert scheduler.wait_idle(WAIT)

    # Then every result was recorded by the time wait_idle returned, most of them along with
    # the claim their worker made next (one backend call for both)
    states = backend.get_states([f"job-{n}" for n in range(40)])
    assert [state.run_count for state in states] == [1] * 40
    assert all(state.occurrence_status == "" for state in states)
    carried = sum(backend.combined_outcomes)
    assert carried >= 19


def test_a_job_lost_by_the_backend_while_it_runs_is_recreated_and_runs_again(clock, schedulers):
    # Given a job whose run is under way
    backend = MemoryBackend(clock)
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = schedulers.stepped(clock, backend)
    scheduler.register(Job("lost", IntervalSchedule(60, start_at=START), recorder))
    scheduler.start(background=False)
    clock.advance(60)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)

    # When the backend loses the job before the run's result is recorded
    with backend._lock:
        backend._records.pop("lost")
    release.set()
    assert scheduler.wait_idle(WAIT)

    # Then the job is re-created at the next tick, and its next occurrence runs
    step(scheduler)
    clock.advance(60)
    step(scheduler)
    assert [at for _, at, *_ in recorder.calls] == [START + timedelta(seconds=60),
                                                   START + timedelta(seconds=120)]


class _GatedBackend(MemoryBackend):
    """A memory backend whose claim calls can be held at a gate."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.closed = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def claim(self, instance_id, requests, lease_ms, peek):
        if self.closed and requests:
            self.entered.set()
            assert self.gate.wait(WAIT)
        return super().claim(instance_id, requests, lease_ms, peek)

    def finish_and_claim(self, outcomes, instance_id, requests, lease_ms, peek):
        states = self.finish(outcomes) if outcomes else []
        return states, self.claim(instance_id, requests, lease_ms, peek)


def test_wait_idle_waits_for_a_result_that_travels_with_a_claim_under_way(clock, schedulers):
    # Given a run whose handler returns while the tick is inside a claim call: its worker
    # leaves the claim (and the result, which travels with claims) to the tick
    backend = _GatedBackend(clock)
    scheduler = schedulers(Scheduler(backend, clock=clock))
    release = schedulers.event()
    started = Recorder(lambda ctx: release.wait(WAIT))
    scheduler.register(Job("first", IntervalSchedule(3600), started))
    scheduler.register(Job("second", IntervalSchedule(3600), lambda: None))
    scheduler.start()
    scheduler.run_now("first")
    assert started.started.wait(WAIT)
    backend.closed = True
    scheduler.run_now("second")
    assert backend.entered.wait(WAIT)
    release.set()
    # When everything has returned but that result is not recorded yet
    # Then wait_idle says so
    assert not scheduler.wait_idle(0.3)
    assert scheduler.get_job("first").metadata.run_count == 0
    # and once the claim is through, the result goes with the next one and wait_idle returns
    backend.gate.set()
    assert scheduler.wait_idle(WAIT)
    assert scheduler.get_job("first").metadata.run_count == 1
