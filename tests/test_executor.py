"""DefaultJobExecutor.execute isolates handler failures; describe_error formats them."""

from __future__ import annotations

import threading

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
from pyscheduler.backends.base import Claim
from pyscheduler.executor import Run, describe_error

from .helpers import START, WAIT, Schedulers


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


# -- lanes: how submitted runs reach the pool ------------------------------------------------

def make_run(job: Job, number: int) -> Run:
    claim = Claim(job.name, f"owner-{number}", number, 0, 1, "regular", 0, 30_000)
    return Run(job, claim, make_context(job.name), None)


class Lanes:
    """A started executor whose ``on_free`` submits the next of ``backlog`` runs while a slot
    is free, the way the scheduler's workers claim for themselves; shut down at teardown."""

    def __init__(self, schedulers: Schedulers, capacity: int, handler, backlog: int = 0) -> None:
        self.executor = schedulers(DefaultJobExecutor())
        self.job = Job("lanes", IntervalSchedule(60), handler)
        self.backlog = [make_run(self.job, n) for n in range(backlog)]
        self.results: list[tuple[Run, object]] = []
        self._finished = threading.Semaphore(0)
        self._lock = threading.Lock()
        self.executor.start(capacity, self._on_done, FakeClock(START), on_free=self._on_free)

    def wait_for(self, count: int) -> None:
        for _ in range(count):
            assert self._finished.acquire(timeout=WAIT), "runs did not finish in time"

    def _on_done(self, run: Run, error, duration: float) -> None:
        with self._lock:
            self.results.append((run, error))
        self._finished.release()

    def _on_free(self) -> None:
        with self._lock:
            while self.backlog and self.executor.free_slots() > 0:
                self.executor.submit(self.backlog.pop(0))


def test_a_lane_takes_the_next_run_on_the_same_thread(schedulers):
    # Given one slot, and an on_free that submits the next run of a backlog
    threads: list[str] = []
    lanes = Lanes(schedulers, 1, lambda: threads.append(threading.current_thread().name), backlog=4)

    # When the first run is submitted
    lanes.executor.submit(make_run(lanes.job, 99))

    # Then the whole backlog runs, one after the other, on the one worker thread
    lanes.wait_for(5)
    assert len(threads) == 5 and len(set(threads)) == 1
    assert [run.claim.owner for run, _ in lanes.results] == \
        ["owner-99", "owner-0", "owner-1", "owner-2", "owner-3"]


def test_lanes_run_handlers_side_by_side_but_never_more_than_the_capacity(schedulers):
    # Given three slots, a backlog of 60 runs, and handlers that count how many run at once;
    # the first three wait for each other, so they must run side by side
    running, peak, calls = [0], [0], [0]
    gate = threading.Lock()
    first_three = threading.Barrier(3)

    def handler() -> None:
        with gate:
            running[0] += 1
            calls[0] += 1
            peak[0] = max(peak[0], running[0])
            meet = calls[0] <= 3
        if meet:
            first_three.wait(WAIT)
        with gate:
            running[0] -= 1

    lanes = Lanes(schedulers, 3, handler, backlog=60)

    # When three runs start at once
    for n in range(3):
        lanes.executor.submit(make_run(lanes.job, 100 + n))

    # Then all 63 run, each once, never more than three at a time
    lanes.wait_for(63)
    assert peak[0] == 3
    assert all(error is None for _, error in lanes.results)
    owners = [run.claim.owner for run, _ in lanes.results]
    assert len(owners) == len(set(owners)) == 63
    assert lanes.executor.wait_idle(WAIT) and lanes.executor.free_slots() == 3


def test_unfinished_runs_come_with_an_event_set_when_they_are_over(schedulers):
    # Given a run whose handler waits for a release
    release = schedulers.event()
    lanes = Lanes(schedulers, 2, lambda: release.wait(WAIT))
    run = make_run(lanes.job, 1)
    lanes.executor.submit(run)

    # When a shutdown asks for the unfinished runs
    (listed,) = lanes.executor.unfinished()

    # Then it gets that run with an unset event, set once the run is over
    assert listed is run and run.done is not None and not run.done.is_set()
    release.set()
    assert run.done.wait(WAIT)
    assert lanes.executor.unfinished() == []


def test_a_submit_the_pool_refuses_leaves_no_trace(schedulers):
    # Given an executor whose pool was shut down
    lanes = Lanes(schedulers, 2, lambda: None)
    lanes.executor.shutdown()

    # When a run is submitted
    with pytest.raises(RuntimeError):
        lanes.executor.submit(make_run(lanes.job, 1))

    # Then its slot is free again and nothing waits for it
    assert lanes.executor.free_slots() == 2
    assert lanes.executor.unfinished() == []
    assert lanes.executor.wait_idle(0)


def test_a_run_submitted_while_the_only_lane_records_a_result_starts_at_once(schedulers):
    # Given a run whose result takes long to record (a slow backend)
    recording, release = threading.Event(), schedulers.event()
    started = threading.Event()
    executor = schedulers(DefaultJobExecutor())

    def on_done(run: Run, error, duration: float) -> None:
        if run.claim.owner == "owner-1":
            recording.set()
            release.wait(WAIT)

    executor.start(2, on_done, FakeClock(START))
    first = make_run(Job("first", IntervalSchedule(60), lambda: None), 1)
    executor.submit(first)
    assert recording.wait(WAIT)

    # When another run is submitted meanwhile
    executor.submit(make_run(Job("second", IntervalSchedule(60), lambda: started.set()), 2))

    # Then it starts on another worker without waiting for that recording
    assert started.wait(WAIT)
    assert not release.is_set()
    release.set()
    assert executor.wait_idle(WAIT)
