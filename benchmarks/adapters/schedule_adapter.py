"""``schedule`` (dbader/schedule): a loop thread calls ``run_pending()``, and each job only
hands its handler to a ``concurrent.futures.ThreadPoolExecutor(10)``, as its docs advise.

The loop sleeps ``idle_seconds`` (until the earliest next run), the best a user can do.
``schedule`` has no anchor for interval jobs, so the adapter sets each job's first
``next_run``; after that ``schedule`` computes the next run itself, as *completion time +
interval*, and so drifts: that is part of what the benchmark measures. It works in naive
local time; the adapter converts at the boundary. One-time jobs return ``CancelJob``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib.metadata import version
from typing import Optional

import schedule

from .base import POOL_SIZE, Fire, Options

__all__ = ["ScheduleAdapter"]


class ScheduleAdapter:
    """A private ``schedule.Scheduler`` and its loop thread."""

    def __init__(self, fire: Fire, options: Options) -> None:
        self.version = version("schedule")
        self._fire = fire
        self._scheduler = schedule.Scheduler()
        self._pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="schedule-pool")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.settings: dict[str, object] = {
            "loop": "run_pending(), then wait idle_seconds",
            "pool": f"concurrent.futures.ThreadPoolExecutor({POOL_SIZE})",
        }

    def add_interval(self, index: int, every: float, first: datetime) -> None:
        # every() is annotated int, but a float interval works (timedelta(seconds=...)).
        job = self._scheduler.every(every).seconds.do(  # type: ignore[arg-type]
            self._pool.submit, self._fire, index)
        job.next_run = _naive_local(first)

    def add_once(self, index: int, run_at: datetime) -> None:
        job = self._scheduler.every(1).days.do(self._once, index)
        job.next_run = _naive_local(run_at)

    def _once(self, index: int) -> type[schedule.CancelJob]:
        self._pool.submit(self._fire, index)
        return schedule.CancelJob

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="schedule-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._scheduler.run_pending()
            idle = self._scheduler.idle_seconds
            if idle is None or idle > 0:
                self._stop.wait(idle)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _naive_local(instant: datetime) -> datetime:
    return instant.astimezone().replace(tzinfo=None)
