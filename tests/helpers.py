"""Shared test helpers: a recording handler, a metrics recorder, and a stepped scheduler."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from pyscheduler import (
    FakeClock,
    JobContext,
    MemoryBackend,
    NoOpMetrics,
    Scheduler,
    SchedulerConfig,
)

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
WAIT = 10.0  # generous bound (real seconds) for anything that crosses threads


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
    """A scheduler on ``clock`` whose steps the test drives (no tick or refresher thread)."""
    settings: dict[str, Any] = {"tick_interval": 5, "max_concurrent": 8, "lock_ttl": 30,
                                "lock_refresh_interval": 10}
    settings.update(config)
    metrics = settings.pop("metrics", None)
    return Scheduler(backend or MemoryBackend(clock), config=SchedulerConfig(**settings),
                     clock=clock, metrics=metrics)


def step(scheduler: Scheduler) -> None:
    """One tick, then wait until every handler it started has returned and been recorded."""
    scheduler.run_pending()
    assert scheduler.wait_idle(WAIT), "handlers did not finish in time"
