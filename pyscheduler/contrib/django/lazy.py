"""The project's scheduler: jobs are declared at import time, the scheduler is built later.

Each app's ``jobs.py`` declares its jobs on the module-level :data:`scheduler` with the same
decorators as :class:`~pyscheduler.Scheduler`. Nothing is built when ``jobs.py`` is imported:
the real scheduler is made from ``settings.PYSCHEDULER`` the first time it is needed (a start,
``manage.py check``, or an explicit :attr:`DjangoScheduler.scheduler`), so that a bad setting
is reported by the checks instead of breaking every import. Every handler runs between two
``django.db.close_old_connections()`` calls.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable, Optional, TypeVar

from django.db import close_old_connections  # type: ignore[import-untyped]

from ..._time import Duration
from ...job import Job, around_handler, check_job_options
from ...scheduler import Scheduler
from ...shutdown import ShutdownReport
from .conf import DjangoSettings, read_settings

__all__ = ["DjangoScheduler", "scheduler"]

F = TypeVar("F", bound=Callable[..., object])
_Declaration = Callable[[Scheduler], object]


class DjangoScheduler:
    """A :class:`~pyscheduler.Scheduler` built lazily from Django settings.

    Declarations made before the build are kept and applied to the scheduler when it is
    built; later ones go straight to it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._declarations: list[_Declaration] = []
        self._scheduler: Optional[Scheduler] = None

    def __repr__(self) -> str:
        state = "not built" if self._scheduler is None else repr(self._scheduler)
        return f"<DjangoScheduler: {len(self._declarations)} jobs declared, {state}>"

    # -- declarations ------------------------------------------------------------------------

    def cron(self, expr: str, name: Optional[str] = None, *, tz: Optional[str] = None,
             **options: object) -> Callable[[F], F]:
        """Decorator: run the function on a cron schedule (in ``tz``, default the
        ``TIMEZONE`` setting); see :meth:`pyscheduler.Scheduler.cron`."""
        check_job_options(options)

        def declare(func: F) -> F:
            self._declare(lambda real: real.cron(expr, name, tz=tz, **options)(
                _with_fresh_connections(name, func)))
            return func

        return declare

    def every(self, interval: Duration, name: Optional[str] = None, *,
              start_at: Optional[datetime] = None, **options: object) -> Callable[[F], F]:
        """Decorator: run the function every ``interval`` (seconds or ``timedelta``); see
        :meth:`pyscheduler.Scheduler.every`."""
        check_job_options(options)

        def declare(func: F) -> F:
            self._declare(lambda real: real.every(interval, name, start_at=start_at, **options)(
                _with_fresh_connections(name, func)))
            return func

        return declare

    def once(self, run_at: datetime, name: Optional[str] = None,
             **options: object) -> Callable[[F], F]:
        """Decorator: run the function once at ``run_at``; see
        :meth:`pyscheduler.Scheduler.once`."""
        check_job_options(options)

        def declare(func: F) -> F:
            self._declare(lambda real: real.once(run_at, name, **options)(
                _with_fresh_connections(name, func)))
            return func

        return declare

    def register(self, job: Job) -> None:
        """Add a :class:`~pyscheduler.Job` (a copy whose handler gets fresh connections)."""
        def declare(real: Scheduler) -> object:
            handler = around_handler(job.name, job.handler, _fresh_connections)
            return real.register(Job(job.name, job.schedule, handler, timeout=job.timeout,
                                     retry_policy=job.retry_policy,
                                     misfire_grace_time=job.misfire_grace_time,
                                     enabled=job.enabled, recover=job.recover))

        self._declare(declare)

    def _declare(self, declaration: _Declaration) -> None:
        with self._lock:
            self._declarations.append(declaration)
            if self._scheduler is not None:
                declaration(self._scheduler)

    # -- the real scheduler ------------------------------------------------------------------

    @property
    def settings(self) -> DjangoSettings:
        """``settings.PYSCHEDULER``, read now.

        :raises ConfigError: a setting is invalid (the error names it).
        """
        return read_settings()

    @property
    def built(self) -> bool:
        """Whether the real scheduler exists yet."""
        return self._scheduler is not None

    @property
    def scheduler(self) -> Scheduler:
        """The real scheduler, built from settings on first use, with every declared job.

        :raises ConfigError: a setting is invalid.
        :raises InvalidJobError: a declared job is invalid (also ``DuplicateJobError``,
            ``InvalidScheduleError``); nothing is built then, and the next use tries again.
        """
        with self._lock:
            if self._scheduler is None:
                built = Scheduler.from_config(read_settings().config)
                for declaration in self._declarations:
                    declaration(built)
                self._scheduler = built
            return self._scheduler

    def start(self) -> None:
        """Build the scheduler if needed and start it (see :meth:`pyscheduler.Scheduler.start`)."""
        self.scheduler.start()

    def stop(self, timeout: Optional[Duration] = None) -> ShutdownReport:
        """Stop gracefully (see :meth:`pyscheduler.Scheduler.stop`); nothing to do if the
        scheduler was never built."""
        with self._lock:
            real = self._scheduler
        return ShutdownReport() if real is None else real.stop(timeout)


def _fresh_connections(call: Callable[[], object]) -> object:
    # Django closes broken and expired connections when a request starts and ends; job
    # threads see no requests, so without this a connection broken once (a database restart,
    # a dropped idle connection) would fail every later run on the same thread, and one past
    # CONN_MAX_AGE would never be closed.
    close_old_connections()
    try:
        return call()
    finally:
        close_old_connections()


def _with_fresh_connections(name: Optional[str], func: F) -> Callable[..., object]:
    label = name or f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
    return around_handler(label, func, _fresh_connections)


#: The project's scheduler: declare jobs on it in each app's ``jobs.py``.
scheduler = DjangoScheduler()
