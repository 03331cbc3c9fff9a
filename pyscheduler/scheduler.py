"""Scheduler: the facade — registration, lifecycle and management of a group's jobs.

:meth:`Scheduler.run_pending` is one deterministic step (claim what is due, start it, enforce
timeouts) and :meth:`Scheduler.start` only loops it on the tick thread; tests call the step
directly under a :class:`~pyscheduler.FakeClock`. Who claims what and when — the tick, the
workers, the local index of due times — is :mod:`pyscheduler.claiming`'s business; what
registering and managing a job store, and what the answers do to the index, is
:mod:`pyscheduler.management`'s; telling a forked copy from the original is
:class:`~pyscheduler.process.ForkGuard`'s. This module checks the state, and holds the lock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid
from datetime import datetime
from typing import Callable, Optional, TypeVar

from ._time import Duration, to_ms, to_seconds
from .backends.base import Backend, InstanceInfo, missing_methods
from .backends.memory import MemoryBackend
from .claiming import Claimer
from .clock import Clock, SystemClock
from .config import SchedulerConfig
from .due_index import DueIndex
from .errors import ConfigError, InvalidJobError, JobNotFoundError, SchedulerStateError
from .executor import DefaultJobExecutor
from .identity import owner_prefix
from .job import Job, check_job_options
from .lock import DistributedLock
from .management import Management
from .observability import Logger, MetricsCollector, NoOpMetrics, SafeHooks, StandardLogger
from .presence import Presence
from .process import ForkGuard, check_threads_enabled, wrong_process_warnings
from .schedules import CronSchedule, IntervalSchedule, OnceSchedule, Schedule
from .shutdown import ShutdownReport, wait_for_runs

__all__ = ["Scheduler"]

F = TypeVar("F", bound=Callable[..., object])

_NEW, _RUNNING, _STOPPED = "new", "running", "stopped"
_FORKED = "a forked copy"  # of a scheduler started in the parent process


class Scheduler:
    """Runs jobs on their schedules; many schedulers sharing a backend run each occurrence once.

    Every part is optional: ``Scheduler()`` runs on a private :class:`MemoryBackend`.

    :param backend: the store shared by the group (default: a new ``MemoryBackend``).
    :param executor: runs handlers (default: ``DefaultJobExecutor``).
    :param lock: claims occurrences and refreshes leases (default: ``DistributedLock``).
    :param logger: a :class:`~pyscheduler.Logger` (default: the ``pyscheduler`` stdlib logger).
    :param metrics: a :class:`~pyscheduler.MetricsCollector` (default: none).
    :param config: a :class:`~pyscheduler.SchedulerConfig` (default: ``SchedulerConfig()``).
    :param clock: the time source (default: the system clock); tests pass a ``FakeClock``.
    """

    def __init__(
        self,
        backend: Optional[Backend] = None,
        executor: Optional[DefaultJobExecutor] = None,
        lock: Optional[DistributedLock] = None,
        logger: Optional[Logger] = None,
        metrics: Optional[MetricsCollector] = None,
        config: Optional[SchedulerConfig] = None,
        *,
        clock: Optional[Clock] = None,
    ) -> None:
        self.config = config or SchedulerConfig.default()
        self.clock: Clock = clock or SystemClock()
        logger = logger or StandardLogger()
        metrics = metrics or NoOpMetrics()
        if backend is None:
            backend = lock.backend if lock is not None else MemoryBackend(self.clock)
        if lock is not None and lock.backend is not backend:
            raise ConfigError("lock", "the lock must use the scheduler's backend")
        missing = missing_methods(backend)
        if missing:
            raise ConfigError("backend", f"{type(backend).__name__} lacks {', '.join(missing)} "
                              "of the Backend contract; subclass "
                              "pyscheduler.backends.base.Backend to inherit its defaults")
        self.backend: Backend = backend
        self.executor = executor or DefaultJobExecutor(logger, metrics)
        self.lock = lock or DistributedLock(backend, logger, metrics)
        self._hooks = SafeHooks(logger, metrics)
        self._fork = ForkGuard(self._hooks, self._disarm)
        self._index = DueIndex()
        self._claimer = Claimer(backend, self.lock, self.executor, self._index, self.config,
                                self.clock, self._hooks)
        self._wake = self._claimer.wake
        self._management = Management(backend, self._index, self._claimer)
        self._mutex = threading.RLock()
        self._state = _NEW
        self._stopping = False
        self._tick_thread: Optional[threading.Thread] = None
        self._presence = Presence(backend, self.lock, self.executor, self._hooks,
                                  on_live=self._claimer.owners.members_heard,
                                  jobs_digest=self._claimer.owners.jobs_digest)
        self._new_identity()

    def _new_identity(self) -> None:
        # Made anew at start(): copies of one scheduler object started in several forked
        # children (a module-level scheduler under gunicorn --preload) must not share it, or
        # each would take the other's claims for its own re-sent ones and run them too.
        self.instance_id = self.config.instance_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        # Owner tokens: unique per claim, and per start even if instance_id is reused.
        self._claimer.set_identity(self.instance_id, owner_prefix(self.instance_id))
        # Every message of this scheduler names it, the executor's and the lock's included
        # (they hold hooks of their own, made from the same logger).
        self._hooks.bind(instance=self.instance_id)
        self.executor.bind_log_fields(instance=self.instance_id)
        self.lock.bind_log_fields(instance=self.instance_id)

    @classmethod
    def from_config(cls, config: SchedulerConfig, *, logger: Optional[Logger] = None,
                    metrics: Optional[MetricsCollector] = None,
                    clock: Optional[Clock] = None) -> Scheduler:
        """Build a scheduler and its backend from ``config.backend_type``."""
        backend: Optional[Backend] = None
        if config.backend_type == "redis":
            from .backends import redis_backend_from_config

            backend = redis_backend_from_config(config)
        return cls(backend, logger=logger, metrics=metrics, config=config, clock=clock)

    def __repr__(self) -> str:
        return (f"Scheduler(instance_id={self.instance_id!r}, jobs={len(self._index)}, "
                f"state={self._state!r})")

    # -- registration ------------------------------------------------------------------------

    def register(self, job: Job) -> Job:
        """Add ``job``; before :meth:`start` it is recorded locally and stored at start.

        A job of the same name already stored by another scheduler of the group keeps its
        stored state (next run, pause, counters).

        :raises DuplicateJobError: this scheduler already has a job of that name.
        """
        if not isinstance(job, Job):
            raise InvalidJobError(f"register() takes a Job, not {job!r}")
        with self._mutex:
            self._fork.check("register()")
            if self._state == _STOPPED:
                raise SchedulerStateError("the scheduler was stopped; create a new one")
            entry = self._index.add(job)
            started = self._state == _RUNNING
        if started:
            self._management.register(entry)
        return job

    def cron(self, expr: str, name: Optional[str] = None, *, tz: Optional[str] = None,
             **options: object) -> Callable[[F], F]:
        """Decorator: run the function on a cron schedule (in ``tz``, default the config's)."""
        schedule = CronSchedule(expr, tz or self.config.timezone)
        return self._decorator(schedule, name, options)

    def every(self, interval: Duration, name: Optional[str] = None, *,
              start_at: Optional[datetime] = None, **options: object) -> Callable[[F], F]:
        """Decorator: run the function every ``interval`` (seconds or ``timedelta``)."""
        return self._decorator(IntervalSchedule(interval, start_at), name, options)

    def once(self, run_at: datetime, name: Optional[str] = None,
             **options: object) -> Callable[[F], F]:
        """Decorator: run the function once at ``run_at``."""
        return self._decorator(OnceSchedule(run_at), name, options)

    def _decorator(self, schedule: Schedule, name: Optional[str],
                   options: dict[str, object]) -> Callable[[F], F]:
        check_job_options(options)

        def register(func: F) -> F:
            job_name = name or f"{func.__module__}.{func.__qualname__}"
            self.register(Job(job_name, schedule, func, **options))  # type: ignore[arg-type]
            return func

        return register

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, background: bool = True) -> None:
        """Open the backend, store the registered jobs and start the threads.

        :param background: ``False`` starts the worker pool but neither the tick thread nor
            the lease refresher: the caller then drives :meth:`run_pending` and
            :meth:`refresh_leases` itself (in its own loop, or in tests under a ``FakeClock``).
        :raises SchedulerStateError: already started or stopped.
        :raises BackendUnavailableError: the backend cannot be reached.
        """
        with self._mutex:
            self._fork.check("start()")
            if self._state != _NEW:
                raise SchedulerStateError(f"start() on a scheduler that is {self._state}")
            if background:
                check_threads_enabled()
            self._state = _RUNNING
            self._new_identity()
            self._fork.starting()
        try:
            self.backend.open()
            with self._mutex:
                entries, pending = self._index.entries(), self._management.take_pending()
            self._management.register_all(entries, pending)
            self._start_runtime(background)
        except BaseException:
            self._state = _NEW
            raise
        self._fork.started()
        self._hooks.log("info", "scheduler started", instance=self.instance_id,
                        jobs=len(self._index))
        for warning in wrong_process_warnings(isinstance(self.backend, MemoryBackend),
                                              self._fork.created_pid):
            self._hooks.log("warning", warning, instance=self.instance_id, pid=os.getpid())

    def _start_runtime(self, background: bool) -> None:
        # Every thread and connection is created here and nowhere else, so that a forked
        # child (gunicorn --preload) can re-create them.
        cfg = self.config
        self.lock.configure(cfg.lock_ttl_seconds, cfg.refresh_seconds, self.clock)
        claimer = self._claimer
        claimer.workers_claim = background
        on_free = claimer.claim_for_free_worker if background else self._wake.set
        self.executor.start(cfg.max_concurrent, claimer.on_run_done, self.clock, on_free=on_free)
        self._presence.announce(self.instance_id, to_ms(self._claimer.backend_now()),
                                self.config.max_concurrent)
        if not background:
            return
        self.lock.start_refresher()
        self._tick_thread = threading.Thread(target=claimer.tick_loop, name="pyscheduler-tick",
                                             daemon=True)
        self._tick_thread.start()

    def _disarm(self) -> None:
        # In a forked child (see ForkGuard): a stopped scheduler, whatever it was.
        self._state = _FORKED
        self._stopping = self._claimer.stopping = True

    def refresh_leases(self) -> float:
        """One step of the lease refresher (what its thread does): extend the leases of
        running jobs if due, cancel those past their local deadline, and send this instance's
        heartbeat if due.

        :returns: seconds until the next step is needed.
        """
        try:
            delay = self.lock.refresh_due()
        finally:
            beat = self.lock.heartbeat_due()  # whatever became of the refresh; never raises
        return min(delay, beat)

    # -- live instances ----------------------------------------------------------------------

    def instances(self) -> list[InstanceInfo]:
        """The group's live instances, sorted by id, fresh from the backend (one call): every
        started scheduler sharing the backend whose last heartbeat is less than ``lock_ttl``
        old, this one included.

        A started scheduler heartbeats every ``lock_refresh_interval`` (from the lease
        refresher's thread, or :meth:`refresh_leases`), with the names of the jobs running
        there; :meth:`stop` removes its record, and a crashed instance's record expires
        ``lock_ttl`` after its last heartbeat, about when its leases do.

        :returns: ``[]`` before :meth:`start`, once :meth:`stop` has begun, and after it.
        :raises NotImplementedError: the backend does not keep live instances (the
            scheduler said so in a warning at start).
        :raises SchedulerStateError: this is a forked copy of a started scheduler.
        """
        self._fork.check("instances()")
        if self._state != _RUNNING or self._stopping:
            return []
        if not self._presence.announced:
            raise NotImplementedError(f"{type(self.backend).__name__} does not keep live "
                                      "instances")
        return self.backend.instances()

    def wait_idle(self, timeout: Optional[Duration] = None) -> bool:
        """Wait until no handler runs and every result is recorded (real time).

        :returns: whether that happened within ``timeout``.
        """
        seconds = None if timeout is None else to_seconds(timeout, "timeout")
        deadline = None if seconds is None else time.monotonic() + seconds
        if not self.executor.wait_idle(seconds):
            return False
        # A result handed over may still wait for the claim it travels with.
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._claimer.outcomes.wait_recorded(left)

    def stop(self, timeout: Optional[Duration] = None) -> ShutdownReport:
        """Stop claiming, wait for running handlers up to ``timeout``, then cancel the rest.

        Occurrences still running at the deadline are handed back to the backend as
        interrupted, so another instance recovers them at once. Idempotent.

        :param timeout: seconds (or ``timedelta``) to wait; ``None`` waits for every handler.
        """
        with self._mutex:
            self._fork.disarm_if_forked()  # a copy's stop() touches nothing of the parent's
            if self._state != _RUNNING or self._stopping:
                return ShutdownReport()
            self._stopping = self._claimer.stopping = True
        self._wake.set()
        if self._tick_thread is not None:
            self._tick_thread.join()
        # A worker's claim under way submits its runs: they are waited for.
        self._claimer.wait_for_claims()
        stuck = wait_for_runs(self.executor, self.clock, timeout)
        handed_back = [run for run in stuck if not run.settled]
        for run in stuck:
            run.settled = True  # whatever it returns now, its occurrence is handed back
            run.context.token.cancel("scheduler shutting down")
        # The backend may be down: shutting down must still finish, and what cannot be
        # recorded now is recovered by another instance when its leases expire.
        self._best_effort("record the last outcomes", self._claimer.outcomes.flush)
        if handed_back:
            self._best_effort("hand back running occurrences",
                              lambda: self.lock.interrupt([run.lease for run in handed_back]))
        self.lock.stop_refresher()
        self._presence.leave(self.instance_id)
        self.executor.shutdown()
        self._best_effort("close the backend", self.backend.close)
        with self._mutex:
            self._state = _STOPPED
        names = sorted({run.job.name for run in stuck})
        self._hooks.log("info", "scheduler stopped", instance=self.instance_id,
                        still_running=names)
        return ShutdownReport(names)

    def _best_effort(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:
            self._hooks.log("error", f"could not {what} while stopping; leases left behind "
                            "expire and their occurrences are recovered",
                            traceback=traceback.format_exc(limit=3))

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- management --------------------------------------------------------------------------

    def pause(self, name: str) -> None:
        """Keep the job registered but run no occurrence until :meth:`resume`; seen by every
        scheduler of the group at its next tick.

        :raises JobNotFoundError: no such job here or in the backend.
        """
        self._manage("pause", name)

    def resume(self, name: str) -> None:
        """Undo :meth:`pause`. :raises JobNotFoundError: no such job."""
        self._manage("resume", name)

    def run_now(self, name: str) -> None:
        """Run an extra occurrence now, through the usual claim (after the one in flight, if
        any). :raises JobNotFoundError: no such job."""
        self._manage("run_now", name)

    def _manage(self, op: str, name: str) -> None:
        with self._mutex:
            self._fork.check(f"{op}()")
            entry = self._index.get(name)
            if self._state == _NEW:
                self._management.record(op, name, entry)  # played at start
                return
        self._management.apply(op, name, entry)

    def remove(self, name: str) -> None:
        """Drop the job and its stored state, for every scheduler of the group.

        :raises JobNotFoundError: no such job here or in the backend.
        """
        with self._mutex:
            self._fork.check("remove()")
            entry = self._index.remove(name)
            if self._state == _NEW:
                self._management.forget(name, entry)
                return
        self._management.remove(name, entry)

    def get_job(self, name: str) -> Job:
        """The job with its metadata freshly read from the backend while the scheduler runs;
        before :meth:`start` and after :meth:`stop`, as this process last saw it.

        :raises JobNotFoundError: this scheduler has no job of that name.
        :raises SchedulerStateError: this is a forked copy of a started scheduler, whose view
            of the group would be stale.
        """
        self._fork.check("get_job()")
        entry = self._index.get(name)
        if entry is None:
            raise JobNotFoundError(name)
        if self._state == _RUNNING:
            self._management.read_states([entry])
        return entry.job

    def jobs(self) -> list[Job]:
        """This scheduler's jobs, sorted by name, with fresh metadata (one backend call) while
        it runs; see :meth:`get_job`."""
        self._fork.check("jobs()")
        entries = sorted(self._index.entries(), key=lambda e: e.job.name)
        if self._state == _RUNNING and entries:
            self._management.read_states(entries)
        return [entry.job for entry in entries]

    # -- the tick ----------------------------------------------------------------------------

    def run_pending(self) -> float:
        """One pass: settle timed-out runs, claim due occurrences up to the free worker slots,
        and start them.

        :returns: seconds until the next pass is needed.
        """
        if self._state != _RUNNING:
            raise SchedulerStateError("run_pending() needs a started scheduler")
        return self._claimer.step()

