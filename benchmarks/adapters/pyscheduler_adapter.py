"""pyscheduler, on its in-memory backend or on the runner's redis-server.

Configured as a user would: the default ``SchedulerConfig`` (10 workers, 5 s tick, 30 s
leases) and ``NoOpLogger``, since logging every start and finish would cost more than
scheduling it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

import pyscheduler
from pyscheduler import (
    IntervalSchedule,
    Job,
    JobContext,
    NoOpLogger,
    NoOpMetrics,
    OnceSchedule,
    Scheduler,
    SchedulerConfig,
)

from .base import POOL_SIZE, Fire, Options, SkipRun, job_name

__all__ = ["PySchedulerAdapter", "scheduler_config"]

#: how long stop() waits for running handlers before cancelling them.
STOP_TIMEOUT_SECONDS = 2.0


def scheduler_config() -> SchedulerConfig:
    """The configuration every pyscheduler run uses."""
    return SchedulerConfig(max_concurrent=POOL_SIZE)


class PySchedulerAdapter:
    """``Scheduler`` with ``MemoryBackend`` (``redis=False``) or ``RedisBackend``."""

    def __init__(self, fire: Fire, options: Options, *, redis: bool) -> None:
        self.version = pyscheduler.__version__
        self._fire = fire
        backend = _redis_backend(options) if redis else None
        config = scheduler_config()
        self.scheduler = Scheduler(backend, logger=NoOpLogger(), metrics=NoOpMetrics(),
                                   config=config)
        self.settings: dict[str, object] = {
            "backend": type(self.scheduler.backend).__name__,
            "logger": "NoOpLogger",
            **{name: getattr(config, name) for name in (
                "tick_interval", "max_concurrent", "lock_ttl", "lock_refresh_interval")},
        }

    def add_interval(self, index: int, every: float, first: datetime) -> None:
        self.scheduler.register(Job(job_name(index), IntervalSchedule(every, start_at=first),
                                    self._handler(index)))

    def add_once(self, index: int, run_at: datetime) -> None:
        self.scheduler.register(Job(job_name(index), OnceSchedule(run_at), self._handler(index)))

    def _handler(self, index: int) -> Callable[[JobContext], None]:
        # A closure, not functools.partial: Job() inspects each handler's signature, which
        # costs several times more for a partial (100,000 jobs: 7 s instead of 3 s).
        fire = self._fire

        def handler(ctx: JobContext) -> None:
            fire(index, ctx.scheduled_at.timestamp())

        return handler

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop(timeout=STOP_TIMEOUT_SECONDS)


def _redis_backend(options: Options) -> pyscheduler.Backend:
    host, port = options.require_redis()
    try:
        import redis

        from pyscheduler.backends.redis import RedisBackend
    except ImportError as exc:
        raise SkipRun(f"pyscheduler's Redis backend is not importable yet ({exc})") from exc
    client = redis.Redis(host=host, port=port)
    backend: pyscheduler.Backend = RedisBackend(client, key_prefix=options.key_prefix)
    return backend
