"""APScheduler 3.x: ``BackgroundScheduler`` with ``ThreadPoolExecutor(10)``, on a
``MemoryJobStore`` or a ``RedisJobStore`` on the runner's redis-server.

Job defaults match pyscheduler's semantics, so both do the same work: a late occurrence runs
once however late (``misfire_grace_time=None``), missed ones coalesce (``coalesce=True``),
and a job never overlaps itself (``max_instances=1``). APScheduler's own logging is turned
off, as pyscheduler's is.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional

import apscheduler
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .base import POOL_SIZE, Fire, Options, job_name

__all__ = ["APSchedulerAdapter", "dispatch"]

_fire: Optional[Fire] = None


def dispatch(index: int) -> None:
    """The job function: module level, so the Redis store can pickle a reference to it."""
    assert _fire is not None
    _fire(index)


class APSchedulerAdapter:
    """``BackgroundScheduler`` with a memory (``redis=False``) or Redis job store."""

    def __init__(self, fire: Fire, options: Options, *, redis: bool) -> None:
        global _fire
        _fire = fire
        self.version = apscheduler.__version__
        logging.getLogger("apscheduler").setLevel(logging.CRITICAL + 1)
        store: BaseJobStore = MemoryJobStore()
        if redis:
            from apscheduler.jobstores.redis import RedisJobStore

            host, port = options.require_redis()
            store = RedisJobStore(jobs_key=f"{options.key_prefix}.jobs",
                                  run_times_key=f"{options.key_prefix}.run_times",
                                  host=host, port=port)
        job_defaults = {"coalesce": True, "misfire_grace_time": None, "max_instances": 1}
        self.scheduler = BackgroundScheduler(
            jobstores={"default": store},
            executors={"default": ThreadPoolExecutor(POOL_SIZE)},
            job_defaults=job_defaults,
            timezone=timezone.utc,
        )
        self.settings: dict[str, object] = {
            "scheduler": "BackgroundScheduler", "jobstore": type(store).__name__,
            "executor": f"ThreadPoolExecutor({POOL_SIZE})", "job_defaults": job_defaults,
            "logging": "off",
        }

    def add_interval(self, index: int, every: float, first: datetime) -> None:
        trigger = IntervalTrigger(seconds=every, start_date=first, timezone=timezone.utc)
        self.scheduler.add_job(dispatch, trigger, args=(index,), id=job_name(index),
                               name=job_name(index))

    def add_once(self, index: int, run_at: datetime) -> None:
        trigger = DateTrigger(run_date=run_at, timezone=timezone.utc)
        self.scheduler.add_job(dispatch, trigger, args=(index,), id=job_name(index),
                               name=job_name(index))

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        # wait=False: handlers queued in the pool are not waited for; the worker exits next.
        self.scheduler.shutdown(wait=False)
