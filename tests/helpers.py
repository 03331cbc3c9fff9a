"""Shared test helpers: a recording handler, a metrics recorder, a stepped scheduler, and the
registry behind the ``schedulers`` fixture."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Optional, TypeVar, Union

from pyscheduler import (
    DefaultJobExecutor,
    FakeClock,
    IntervalSchedule,
    Job,
    JobContext,
    MemoryBackend,
    NoOpMetrics,
    RetryPolicy,
    Scheduler,
    SchedulerConfig,
)

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
WAIT = 10.0  # generous bound (real seconds) for anything that crosses threads
#: the longest (real seconds) teardown waits for the handlers it released to return
IDLE_WITHIN = 2.0


class Recorder:
    """A handler that records every start as (job, scheduled_at, attempt, fence, kind)."""

    def __init__(self, behaviour: Optional[Callable[[JobContext], Any]] = None) -> None:
        self.calls: list[tuple[str, datetime, int, int, str]] = []
        self.contexts: list[JobContext] = []
        self._behaviour = behaviour
        self._lock = threading.Lock()
        self.started = threading.Event()

    def __call__(self, ctx: JobContext) -> None:
        with self._lock:
            self.calls.append((ctx.job_name, ctx.scheduled_at, ctx.attempt, ctx.fencing_token,
                               ctx.kind))
            self.contexts.append(ctx)
        self.started.set()
        if self._behaviour is not None:
            self._behaviour(ctx)

    def occurrences(self) -> Counter[tuple[str, datetime]]:
        with self._lock:
            return Counter((name, at) for name, at, *_ in self.calls)


class MetricsRecorder(NoOpMetrics):
    """Counts every metrics hook call by name."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[object, ...]]] = []

    def _add(self, name: str, *args: object) -> None:
        self.events.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def job_started(self, name: str) -> None:
        self._add("job_started", name)

    def job_completed(self, name: str, duration: float) -> None:
        self._add("job_completed", name)

    def job_failed(self, name: str, error: str) -> None:
        self._add("job_failed", name, error)

    def job_retried(self, name: str, attempt: int, delay: float) -> None:
        self._add("job_retried", name, attempt, delay)

    def job_timed_out(self, name: str) -> None:
        self._add("job_timed_out", name)

    def job_skipped(self, name: str, reason: str) -> None:
        self._add("job_skipped", name, reason)

    def lock_acquired(self, name: str) -> None:
        self._add("lock_acquired", name)

    def lock_contended(self, name: str) -> None:
        self._add("lock_contended", name)

    def lock_lost(self, name: str) -> None:
        self._add("lock_lost", name)


def stepped(clock: FakeClock, backend: Optional[MemoryBackend] = None, **config: Any) -> Scheduler:
    """A scheduler on ``clock`` whose steps the test drives (no tick or refresher thread).

    Tests take it from the ``schedulers`` fixture (:meth:`Schedulers.stepped`), which also
    stops it at teardown.
    """
    settings: dict[str, Any] = {"tick_interval": 5, "max_concurrent": 8, "lock_ttl": 30,
                                "lock_refresh_interval": 10}
    settings.update(config)
    metrics = settings.pop("metrics", None)
    return Scheduler(backend or MemoryBackend(clock), config=SchedulerConfig(**settings),
                     clock=clock, metrics=metrics)


def lose_the_lease_of_a_run(scheduler: Scheduler, clock: FakeClock, name: str,
                            handler: Recorder) -> None:
    """Register ``name`` (every 100 s) to run ``handler``, start the stepped ``scheduler``,
    run its first occurrence and let the lease's deadline pass (``lock_ttl=3``) without a
    refresh, as a refresher cut off from the backend would: the refresher's step then
    cancels the run's token."""
    scheduler.register(Job(name, IntervalSchedule(100), handler))
    scheduler.start(background=False)
    clock.advance(100)
    scheduler.run_pending()
    assert handler.started.wait(WAIT)
    clock.advance(3)
    scheduler.refresh_leases()


def fail_once_then_retry(scheduler: Scheduler, clock: FakeClock, name: str,
                         retry_after: float) -> None:
    """Register ``name`` (every 10 s from ``clock``'s now; one retry ``retry_after`` seconds
    after a failure), start the stepped ``scheduler`` and run its first occurrence: the first
    attempt raises ``ValueError("disk full")``, the retry succeeds."""
    attempts: list[int] = []

    def handler() -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise ValueError("disk full")

    policy = RetryPolicy(max_retries=1, initial_interval=retry_after, jitter=0)
    scheduler.register(Job(name, IntervalSchedule(10), handler, retry_policy=policy))
    scheduler.start(background=False)
    clock.advance(10)
    step(scheduler)
    clock.advance(retry_after)
    step(scheduler)
    assert attempts == [1, 2]


def step(scheduler: Scheduler) -> None:
    """One tick, then wait until every handler it started has returned and been recorded."""
    scheduler.run_pending()
    assert scheduler.wait_idle(WAIT), "handlers did not finish in time"


#: what :class:`Schedulers` stops at teardown: schedulers, and executors tested on their own
Stoppable = TypeVar("Stoppable", bound=Union[Scheduler, DefaultJobExecutor])


class Schedulers:
    """The schedulers of one test, stopped at its teardown whether it passed or not.

    A test that asserts after ``stop()`` or tests stopping still calls it: a second stop() is
    a no-op. Handlers that block should wait on :meth:`event`: teardown sets those events
    first, so that a failing test leaves no handler (and no worker thread) waiting.
    """

    def __init__(self) -> None:
        self._started: list[Union[Scheduler, DefaultJobExecutor]] = []
        self._events: list[threading.Event] = []

    def __call__(self, scheduler: Stoppable) -> Stoppable:
        """Stop ``scheduler`` (or shut down a bare executor) at teardown; returns it."""
        self._started.append(scheduler)
        return scheduler

    def stepped(self, clock: FakeClock, backend: Optional[MemoryBackend] = None,
                **config: Any) -> Scheduler:
        """:func:`tests.helpers.stepped`, stopped at teardown."""
        return self(stepped(clock, backend, **config))

    def event(self) -> threading.Event:
        """A new event, set at teardown before anything stops: for handlers to block on."""
        event = threading.Event()
        self._events.append(event)
        return event

    def close(self) -> None:
        """Set every event, then stop everything registered, the last registered first."""
        for event in self._events:
            event.set()
        errors: list[BaseException] = []
        for started in reversed(self._started):
            try:
                # Bounded in real time: under a fake clock that nobody moves any more,
                # stop(timeout=...) would never reach its deadline with a handler stuck.
                started.wait_idle(IDLE_WITHIN)
                if isinstance(started, Scheduler):
                    started.stop(timeout=0)
                else:
                    started.shutdown()
            except Exception as exc:  # stop the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]
