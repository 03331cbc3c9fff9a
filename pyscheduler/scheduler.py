"""Scheduler: registers jobs, claims their due occurrences, runs them, records the outcome.

:meth:`Scheduler.run_pending` is one deterministic step (claim what is due, start it, enforce
timeouts) and :meth:`Scheduler.start` only loops it on the tick thread; tests call the step
directly under a :class:`~pyscheduler.FakeClock`. Started in the background, the workers also
claim for themselves: one that finishes a run claims what is due for the free slots, so that
a burst flows through the pool without a thread hand-off per occurrence.

The scheduler keeps a local index of its jobs' due times (:class:`~pyscheduler.due_index.
DueIndex`), learnt from the backend's answers, so that one tick asks the backend once for a
whole batch of due occurrences. A claim with worker slots to spare (at least one every
``tick_interval``) also reports due work this instance did not know about (retries and
``run_now`` requests made elsewhere, orphans to recover).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import threading
import traceback
import uuid
import weakref
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Optional, TypeVar

from ._time import Duration, from_ms, to_ms, to_seconds
from .backends.base import (
    Backend,
    Claim,
    ClaimBatch,
    ClaimRequest,
    DueEntry,
    JobDefinition,
    JobState,
)
from .backends.memory import MemoryBackend
from .clock import Clock, SystemClock
from .config import SchedulerConfig
from .context import JobContext
from .due_index import DueIndex, IndexEntry
from .errors import (
    ConfigError,
    InvalidJobError,
    JobNotFoundError,
    SchedulerStateError,
)
from .executor import DefaultJobExecutor, Run
from .job import Job, check_job_options
from .lock import DistributedLock
from .observability import (
    Logger,
    MetricsCollector,
    NoOpMetrics,
    SafeHooks,
    StandardLogger,
)
from .outcomes import OutcomeQueue, decide_outcome
from .process import check_threads_enabled, current_server
from .schedules import CronSchedule, IntervalSchedule, OnceSchedule, Schedule, latest_due_ms

__all__ = ["Scheduler", "ShutdownReport"]

F = TypeVar("F", bound=Callable[..., object])

_NEW, _RUNNING, _STOPPED = "new", "running", "stopped"
_FORKED = "a forked copy"  # of a scheduler started in the parent process



@dataclass(frozen=True)
class ShutdownReport:
    """What :meth:`Scheduler.stop` left behind.

    :ivar still_running: names of jobs whose handlers were still running at the deadline;
        their tokens were cancelled and their occurrences handed back for recovery.
    :ivar completed: whether every handler returned before the deadline.
    """

    still_running: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return not self.still_running


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
        self.backend: Backend = backend
        self.executor = executor or DefaultJobExecutor(logger, metrics)
        self.lock = lock or DistributedLock(backend, logger, metrics)
        self._hooks = SafeHooks(logger, metrics)
        self._created_pid = os.getpid()
        self._started_pid: Optional[int] = None
        self._new_identity()
        self._index = DueIndex()
        self._pending_ops: list[tuple[str, str]] = []
        self._mutex = threading.RLock()
        self._claim_lock = threading.Lock()
        self._claim_wanted = False
        self._workers_claim = False  # started in the background: see _claim_for_free_worker
        self._tick_wakes_at = math.inf  # monotonic; when the sleeping tick wakes by itself
        self._state = _NEW
        self._stopping = False
        self._wake = threading.Event()
        self._tick_thread: Optional[threading.Thread] = None
        self._offset_ms = 0  # backend clock minus ours, learnt from every claim answer
        self._last_poll = float("-inf")
        self._outcomes = OutcomeQueue(self.lock.finish, self._after_finish)
        self._failures = 0

    def _new_identity(self) -> None:
        # Made anew at start(): copies of one scheduler object started in several forked
        # children (a module-level scheduler under gunicorn --preload) must not share it, or
        # each would take the other's claims for its own re-sent ones and run them too.
        self.instance_id = self.config.instance_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        # Owner tokens: unique per claim, and per start even if instance_id is reused.
        self._owner_prefix = f"{self.instance_id}:{uuid.uuid4().hex[:12]}:"
        self._claim_numbers = itertools.count(1)

    @classmethod
    def from_config(
        cls,
        config: SchedulerConfig,
        *,
        logger: Optional[Logger] = None,
        metrics: Optional[MetricsCollector] = None,
        clock: Optional[Clock] = None,
    ) -> Scheduler:
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
            self._check_not_forked("register()")
            if self._state == _STOPPED:
                raise SchedulerStateError("the scheduler was stopped; create a new one")
            entry = self._index.add(job)
            started = self._state == _RUNNING
        if started:
            try:
                (state,) = self.backend.register([self._definition(job)])
            except BaseException:
                self._index.discard(entry)
                raise
            self._apply_state(entry, state)
            self._wake.set()
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

    def _definition(self, job: Job, now: Optional[datetime] = None) -> JobDefinition:
        now = now or self.clock.now()
        if isinstance(job.schedule, OnceSchedule):
            first: Optional[datetime] = job.schedule.run_at  # a past run time still runs once
        else:
            first = job.schedule.next_after(now)
        return JobDefinition(job.name, None if first is None else to_ms(first),
                             job.stored_description(), start_paused=not job.enabled,
                             version=job.definition_version)

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
            self._check_not_forked("start()")
            if self._state != _NEW:
                raise SchedulerStateError(f"start() on a scheduler that is {self._state}")
            if background:
                check_threads_enabled()
            self._state = _RUNNING
            self._new_identity()
            self._started_pid = os.getpid()
        try:
            self.backend.open()
            self._register_all()
            self._start_runtime(background)
        except BaseException:
            self._state = _NEW
            raise
        _STARTED.add(self)
        self._hooks.log("info", "scheduler started", instance=self.instance_id,
                        jobs=len(self._index))
        self._warn_about_this_process()

    def _warn_about_this_process(self) -> None:
        # Two set-ups that run a job in the wrong processes without failing anywhere.
        server = current_server()
        if server.is_master:
            self._hooks.log("warning", f"started in the {server.server} master, which forks the "
                            "workers later: jobs run in the master only, and each worker's "
                            "copy of this scheduler runs nothing. Start it with "
                            "pyscheduler.start_in_workers(scheduler) to run it in every worker",
                            instance=self.instance_id, pid=os.getpid())
        if not isinstance(self.backend, MemoryBackend):
            return
        if server.multi_process:
            where = f"a {server.server} worker"
            if server.workers:
                where += f" (one of {server.workers})"
        elif os.getpid() != self._created_pid:
            where = f"a forked process (built in {self._created_pid})"
        else:
            return
        self._hooks.log("warning", f"the in-memory backend keeps jobs in this process only, "
                        f"and this is {where}: each process runs every job on its own, so "
                        "every occurrence runs once per process. Share a Redis backend "
                        "(backend_type='redis', PYSCHEDULER_BACKEND_TYPE=redis) to run it once",
                        instance=self.instance_id, pid=os.getpid())

    def _register_all(self) -> None:
        with self._mutex:
            entries = self._index.entries()
            ops, self._pending_ops = self._pending_ops, []
        now = self.clock.now()
        states = self.backend.register([self._definition(e.job, now) for e in entries])
        for entry, state in zip(entries, states):
            self._apply_state(entry, state)
        for op, name in ops:
            getattr(self, op)(name)

    def _start_runtime(self, background: bool) -> None:
        # Every thread and connection is created here and nowhere else, so that a forked
        # child (gunicorn --preload) can re-create them.
        cfg = self.config
        self.lock.configure(cfg.lock_ttl_seconds, cfg.refresh_seconds, self.clock)
        self._workers_claim = background
        on_free = self._claim_for_free_worker if background else self._wake.set
        self.executor.start(cfg.max_concurrent, self._on_run_done, self.clock, on_free=on_free)
        if not background:
            return
        self.lock.start_refresher()
        self._tick_thread = threading.Thread(target=self._tick_loop, name="pyscheduler-tick",
                                             daemon=True)
        self._tick_thread.start()

    def _after_fork_in_child(self) -> None:
        # A forked child has none of the parent's threads, and the leases are the parent's:
        # this copy must neither wait for runs it does not have nor hand back or refresh
        # leases it does not own. It becomes a stopped scheduler, and says so.
        if self._state == _FORKED:
            return
        self._state = _FORKED
        self._stopping = True
        self._hooks.log("warning", self._forked_message("pyscheduler"), pid=os.getpid(),
                        parent=self._started_pid, instance=self.instance_id)

    def _forked_message(self, what: str) -> str:
        return (f"{what}: this scheduler was started in process {self._started_pid} and this "
                f"process ({os.getpid()}) is a fork of it, where its copy runs no jobs and "
                "knows nothing current (threads do not survive fork()). Start the scheduler "
                "in each worker instead, with pyscheduler.start_in_workers(scheduler), or "
                "create and start one after the fork")

    def _disarm_if_forked(self) -> None:
        # uWSGI forks without Python's at-fork hooks: the pid tells a copy from the original.
        if self._started_pid is not None and self._started_pid != os.getpid():
            self._after_fork_in_child()

    def _check_not_forked(self, what: str) -> None:
        self._disarm_if_forked()
        if self._state == _FORKED:
            raise SchedulerStateError(self._forked_message(what))

    def refresh_leases(self) -> float:
        """One step of the lease refresher (what its thread does): extend the leases of
        running jobs if due, cancel those past their local deadline.

        :returns: seconds until the next step is needed.
        """
        return self.lock.refresh_due()

    def wait_idle(self, timeout: Optional[Duration] = None) -> bool:
        """Wait until no handler runs and every result is recorded (real time).

        :returns: whether that happened within ``timeout``.
        """
        seconds = None if timeout is None else to_seconds(timeout, "timeout")
        return self.executor.wait_idle(seconds)

    def stop(self, timeout: Optional[Duration] = None) -> ShutdownReport:
        """Stop claiming, wait for running handlers up to ``timeout``, then cancel the rest.

        Occurrences still running at the deadline are handed back to the backend as
        interrupted, so another instance recovers them at once. Idempotent.

        :param timeout: seconds (or ``timedelta``) to wait; ``None`` waits for every handler.
        """
        with self._mutex:
            self._disarm_if_forked()  # a copy's stop() touches nothing of the parent's
            if self._state != _RUNNING or self._stopping:
                return ShutdownReport()
            self._stopping = True
        self._wake.set()
        if self._tick_thread is not None:
            self._tick_thread.join()
        with self._claim_lock:
            pass  # a worker's claim under way has submitted its runs: they are waited for
        stuck = self._wait_for_runs(timeout)
        handed_back = [run for run in stuck if not run.settled]
        for run in stuck:
            run.settled = True  # whatever it returns now, its occurrence is handed back
            run.context.token.cancel("scheduler shutting down")
        # The backend may be down: shutting down must still finish, and what cannot be
        # recorded now is recovered by another instance when its leases expire.
        self._best_effort("record the last outcomes", self._outcomes.flush)
        self._hand_back(handed_back)
        self.lock.stop_refresher()
        self.executor.shutdown()
        self._best_effort("close the backend", self.backend.close)
        with self._mutex:
            self._state = _STOPPED
        names = sorted({run.job.name for run in stuck})
        self._hooks.log("info", "scheduler stopped", instance=self.instance_id,
                        still_running=names)
        return ShutdownReport(names)

    def _wait_for_runs(self, timeout: Optional[Duration]) -> list[Run]:
        seconds = None if timeout is None else to_seconds(timeout, "timeout")
        deadline = None if seconds is None else self.clock.monotonic() + seconds
        while True:
            runs = self.executor.unfinished()
            pending = [(run, run.done) for run in runs if run.done and not run.done.is_set()]
            if not pending:
                return []
            done = pending[0][1]
            if deadline is None:
                done.wait()
                continue
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return [run for run, _ in pending]
            self.clock.wait(done, left)

    def _hand_back(self, runs: list[Run]) -> None:
        if runs:
            self._best_effort("hand back running occurrences",
                              lambda: self.lock.interrupt([run.lease for run in runs]))

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
            self._check_not_forked(f"{op}()")
            entry = self._index.get(name)
            if self._state == _NEW:
                if entry is None:
                    raise JobNotFoundError(name)
                self._pending_ops.append((op, name))
                if op in ("pause", "resume"):
                    entry.job.enabled = op == "resume"
                return
        due: Optional[DueEntry] = getattr(self.backend, op)(name)
        if due is None:
            if entry is None:
                raise JobNotFoundError(name)
            self._rebuild([entry])
            due = getattr(self.backend, op)(name)
        if entry is not None and due is not None:
            self._apply_due(entry, due)
        self._wake.set()

    def remove(self, name: str) -> None:
        """Drop the job and its stored state, for every scheduler of the group.

        :raises JobNotFoundError: no such job here or in the backend.
        """
        with self._mutex:
            self._check_not_forked("remove()")
            entry = self._index.remove(name)
            if self._state == _NEW:
                if entry is None:
                    raise JobNotFoundError(name)
                self._pending_ops = [op for op in self._pending_ops if op[1] != name]
                return
        if not self.backend.remove(name) and entry is None:
            raise JobNotFoundError(name)

    def get_job(self, name: str) -> Job:
        """The job with its metadata freshly read from the backend while the scheduler runs;
        before :meth:`start` and after :meth:`stop`, as this process last saw it.

        :raises JobNotFoundError: this scheduler has no job of that name.
        :raises SchedulerStateError: this is a forked copy of a started scheduler, whose view
            of the group would be stale.
        """
        self._check_not_forked("get_job()")
        entry = self._index.get(name)
        if entry is None:
            raise JobNotFoundError(name)
        if self._state == _RUNNING:
            (state,) = self.backend.get_states([name])
            if state is not None:
                entry.job._saw(state)
        return entry.job

    def jobs(self) -> list[Job]:
        """This scheduler's jobs, sorted by name, with fresh metadata (one backend call) while
        it runs; see :meth:`get_job`."""
        self._check_not_forked("jobs()")
        entries = sorted(self._index.entries(), key=lambda e: e.job.name)
        if self._state == _RUNNING and entries:
            states = self.backend.get_states([e.job.name for e in entries])
            for entry, state in zip(entries, states):
                if state is not None:
                    entry.job._saw(state)
        return [entry.job for entry in entries]

    # -- the tick ----------------------------------------------------------------------------

    def run_pending(self) -> float:
        """One pass: settle timed-out runs, claim due occurrences up to the free worker slots,
        and start them.

        :returns: seconds until the next pass is needed.
        """
        if self._state != _RUNNING:
            raise SchedulerStateError("run_pending() needs a started scheduler")
        for run in self.executor.expire_overdue(self.clock.monotonic()):
            self._settle_timeout(run)
        self._outcomes.flush()
        if not self._claim_for_free_slots():
            # A worker is claiming; it wakes this thread if it leaves anything to do sooner.
            return self.config.tick_seconds
        return self._next_delay()

    def _claim_for_free_slots(self) -> bool:
        """Claim due occurrences for the free worker slots.

        The tick and the workers that just finished a run (see :meth:`_claim_for_free_worker`)
        both claim, one at a time so that together they never claim more than the free
        slots. Whoever finds a claim under way leaves a note and goes on, and the claimer
        looks again, counting the slots freed meanwhile: waiting for the lock instead would
        queue every worker behind it.

        :returns: whether this thread claimed; ``False`` if it left the claim to another.
        """
        self._claim_wanted = True
        claimed = False
        while self._claim_wanted:
            if not self._claim_lock.acquire(blocking=False):
                return claimed
            try:
                claimed = True
                self._claim_wanted = False
                free = self.executor.free_slots()
                if free > 0 and not self._stopping:
                    self._claim_and_start(free)
            finally:
                self._claim_lock.release()
        self._outcomes.flush()  # results queued meanwhile that no claim took along
        return claimed

    def _claim_for_free_worker(self) -> None:
        """On a worker that just finished a run: claim what is due for the free slots.

        Under load this starts the next occurrence without waking the tick thread, a hand-off
        that costs more than the rest of a run. The tick still wakes at every due time and
        claims what the workers did not; the worker that claimed wakes it when it should wake
        sooner than planned (it went to sleep with every worker busy, or a run with an
        earlier timeout started since).
        """
        if self._stopping or self._failures:
            # While the backend fails the tick alone claims (and backs off); this run's
            # result is recorded now if it can be, else by the tick or stop().
            try:
                self._outcomes.flush()
            except Exception:
                pass  # kept queued; the tick's failures are what gets logged
            return
        try:
            if not self._claim_for_free_slots():
                return  # the claimer does the rest
            wake = self.clock.monotonic() + self._next_delay() < self._tick_wakes_at
        except Exception:
            self._hooks.log("error", "claiming for a free worker failed; the tick retries",
                            traceback=traceback.format_exc(limit=5))
            wake = True
        if wake:
            self._wake.set()

    def _claim_and_start(self, free: int) -> None:
        now_ms = self._backend_now_ms()
        requests = self._due_requests(now_ms, free)
        now = self.clock.monotonic()
        if not requests and now - self._last_poll < self.config.tick_seconds:
            return  # nothing due here, and the backend was asked recently
        self._last_poll = now
        # Results waiting to be recorded go along: one backend call records them and claims.
        outcomes = self._outcomes.take()
        try:
            states, batch, sent = self.lock.finish_and_acquire(
                [outcome for _, outcome in outcomes], self.instance_id, requests,
                peek=free - len(requests))
        except BaseException:
            self._outcomes.failed(outcomes)
            self._restore(requests)
            raise
        self._outcomes.sent(outcomes, states)
        self._offset_ms = batch.now_ms - int(self.clock.time() * 1000)
        self._apply_batch(batch, sent)

    def _restore(self, requests: list[ClaimRequest]) -> None:
        """Put requests whose claim failed back in the local index, to be asked again."""
        for request in requests:
            entry = self._index.get(request.job_name)
            if entry is not None and entry.due_ms is None:
                self._set_due(entry, request.expected_due_ms, request.expected_next_run_ms)

    def _due_requests(self, now_ms: int, limit: int) -> list[ClaimRequest]:
        # Taken out of the index while in flight; the answer tells what comes next.
        return [self._request(entry, due, now_ms)
                for entry, due in self._index.take_due(now_ms, limit)]

    def _request(self, entry: IndexEntry, due: int, now_ms: int) -> ClaimRequest:
        job = entry.job
        scheduled: Optional[int] = None
        following: Optional[int] = None
        if entry.next_run_ms is not None and entry.next_run_ms <= now_ms:
            scheduled, following = latest_due_ms(job.schedule, entry.next_run_ms, now_ms)
        grace = job.misfire_grace_time
        if grace is None:
            grace = self.config.misfire_grace_seconds
        return ClaimRequest(
            job_name=job.name,
            owner=f"{self._owner_prefix}{next(self._claim_numbers)}",
            expected_due_ms=due,
            expected_next_run_ms=entry.next_run_ms,
            scheduled_ms=scheduled,
            following_ms=following,
            misfire_grace_ms=None if grace is None else int(grace * 1000),
            max_recoveries=job.max_recoveries,
            definition_version=job.definition_version,
        )

    def _apply_batch(self, batch: ClaimBatch, sent: float) -> None:
        for claim in batch.claims:
            self._start_claim(claim, sent)
        if batch.refused or batch.due:
            claimed = {claim.job_name for claim in batch.claims}
            for due in batch.refused + batch.due:
                entry = self._index.get(due.name)
                if entry is not None and due.name not in claimed:
                    self._apply_due(entry, due)
        for name in batch.skipped:
            self._hooks.metric("job_skipped", name, "misfired")
            self._hooks.log("warning", "occurrence skipped: later than its misfire grace time",
                            job=name)
        for name in batch.abandoned:
            self._hooks.metric("job_skipped", name, "abandoned")
            self._hooks.log("error", "occurrence abandoned: its holder stopped mid-run and "
                            "recovery is exhausted or disabled", job=name)

    def _start_claim(self, claim: Claim, sent: float) -> None:
        entry = self._index.run_started(claim.job_name)
        if entry is None:  # removed here while claiming: the backend dropped it too
            return
        entry.superseded = False
        job = entry.job
        deadline = None if job.timeout is None else self.clock.monotonic() + job.timeout
        ctx = JobContext(
            job_name=job.name,
            scheduled_at=from_ms(claim.scheduled_ms),
            attempt=claim.attempt,
            deadline=None if job.timeout is None else from_ms(
                to_ms(self.clock.now()) + int(job.timeout * 1000)),
            fencing_token=claim.fence,
            kind=claim.kind,
            clock=self.clock,
        )
        run = Run(job, claim, ctx, deadline)
        self.lock.hold(run.lease, ctx.token, sent)
        if self._hooks.logs("info"):
            self._hooks.log("info", "job started", job=job.name, attempt=claim.attempt,
                            scheduled_at=ctx.scheduled_at.isoformat(), fence=claim.fence,
                            kind=claim.kind)
        self.executor.submit(run)

    def _next_delay(self) -> float:
        # With every worker busy there is nothing to claim: sleep until a timeout is due or a
        # tick interval passed (workers claim for themselves as they finish, and wake the
        # tick if it should wake sooner).
        delay = self.config.tick_seconds
        if self.executor.free_slots() > 0:
            delay -= self.clock.monotonic() - self._last_poll
            top = self._index.earliest()
            if top is not None:
                # Not from whole milliseconds: rounding now down would wake up to 1 ms late.
                backend_now = self.clock.time() + self._offset_ms / 1000
                delay = min(delay, top / 1000 - backend_now)
        deadline = self.executor.next_deadline()
        if deadline is not None:
            delay = min(delay, deadline - self.clock.monotonic())
        return max(0.0, delay)

    def _tick_loop(self) -> None:
        while not self._stopping:
            # Until this pass has decided how long to sleep, a worker must wake it for
            # anything: the pass may have looked before that worker's run changed things.
            self._tick_wakes_at = math.inf
            self._wake.clear()
            try:
                delay = self.run_pending()
                self._failures = 0
            except Exception:
                self._failures += 1
                delay = min(self.config.tick_seconds, 0.05 * 2 ** min(self._failures, 8))
                self._hooks.log("error", "tick failed; backing off", seconds=round(delay, 3),
                                traceback=traceback.format_exc(limit=5))
            if self._stopping:
                break
            if delay > 0:
                self._tick_wakes_at = self.clock.monotonic() + delay
                self.clock.wait(self._wake, delay)

    # -- outcomes ----------------------------------------------------------------------------

    def _on_run_done(self, run: Run, error: Optional[BaseException], duration: float) -> None:
        self._index.run_ended(run.job.name)
        if run.settled:
            self._hooks.log("warning", "a cancelled handler returned after its outcome was "
                            "settled; its worker is free again", job=run.job.name,
                            seconds=round(duration, 3))
        else:
            if run.timed_out:  # it returned within the grace: timed out, whatever it raised
                error, duration = None, run.job.timeout or duration
            outcome = decide_outcome(run, error, duration, self._hooks, timed_out=run.timed_out)
            if self._workers_claim:
                # Recorded along with the claim this worker makes next (see _claim_and_start).
                self._outcomes.add(run, outcome)
            else:
                self._outcomes.report(run, outcome)

    def _settle_timeout(self, run: Run) -> None:
        self._hooks.log("warning", "job timed out and its handler ignores the cancellation: "
                        "the attempt is settled without it, its worker stays busy until it "
                        "returns, and a retry waits for its lease to run out",
                        job=run.job.name, attempt=run.claim.attempt)
        timeout = run.job.timeout or 0.0
        self._outcomes.report(run, decide_outcome(run, None, timeout, self._hooks,
                                                  timed_out=True, still_running=True))

    def _after_finish(self, run: Run, state: Optional[JobState]) -> None:
        entry = self._index.get(run.job.name)
        if entry is None:
            return
        if state is None:  # stale: learn the current state from the backend
            (state,) = self.backend.get_states([run.job.name])
            if state is None:
                # Lost or reset under the run (data loss, garbage): left out of the index it
                # would never run here again. Asked for at once, the claim's answer says
                # whether it was removed (dropped here) or lost (re-created).
                self._set_due(entry, self._backend_now_ms(), entry.next_run_ms)
                self._wake.set()
                return
        entry.job._saw(state)
        self._set_due(entry, state.due_ms, state.next_run_ms)

    # -- the local index ---------------------------------------------------------------------

    def _apply_state(self, entry: IndexEntry, state: JobState) -> None:
        entry.job._saw(state)
        self._set_due(entry, state.due_ms, state.next_run_ms)

    def _apply_due(self, entry: IndexEntry, due: DueEntry) -> None:
        if due.missing:
            if due.removed:
                self._drop(entry, "removed by another scheduler of the group")
            else:
                self._rebuild([entry])
            return
        if due.superseded:
            self._leave_to_others(entry, due)
            return
        self._set_due(entry, due.due_ms, due.next_run_ms)

    def _leave_to_others(self, entry: IndexEntry, due: DueEntry) -> None:
        """The group runs a definition of the job registered since by another instance (a
        rolling deploy): claim nothing of it, and write none of this schedule back.

        The job leaves the local index; a peek that finds it due brings it back, to be asked
        again, so that it runs here once it is registered back with this definition (a
        rollback) — at most one refused claim per tick meanwhile.
        """
        if not entry.superseded:
            entry.superseded = True
            self._hooks.log("warning", "another instance registered this job with a different "
                            "definition (a rolling deploy?): the group runs the latest one, "
                            "and this instance leaves the job to the instances that have it",
                            job=entry.job.name)
        self._index.set_due(entry, None, due.next_run_ms)

    def _set_due(self, entry: IndexEntry, due_ms: Optional[int],
                 next_run_ms: Optional[int]) -> None:
        if due_ms is not None and next_run_ms is not None and self._backend_now_ms() < \
                next_run_ms < due_ms:
            # An occurrence runs elsewhere (due = its lease expiry) and the job was advanced
            # to its following occurrence: ask for that one on time. If the run is still
            # going then, the refusal brings the lease expiry back.
            due_ms = next_run_ms
        self._index.set_due(entry, due_ms, next_run_ms)

    def _drop(self, entry: IndexEntry, why: str) -> None:
        self._index.discard(entry)
        self._hooks.log("info", "job dropped", job=entry.job.name, reason=why)

    def _rebuild(self, entries: list[IndexEntry]) -> None:
        """Re-create jobs the backend lost (data loss, corrupt state), continuing from what
        this instance last saw so that an occurrence it already ran does not run again."""
        definitions = []
        for entry in entries:
            definition = self._definition(entry.job)
            first = definition.first_run_ms
            if entry.next_run_ms is not None and first is not None:
                # Never earlier than the next occurrence this instance knew of: it may have
                # run everything before it. Missed occurrences are not replayed (R15).
                first = max(first, entry.next_run_ms)
            definitions.append(replace(definition, first_run_ms=first))
        self._hooks.log("warning", "backend lost jobs; re-creating them",
                        jobs=[d.name for d in definitions])
        for entry, state in zip(entries, self.backend.register(definitions)):
            self._apply_state(entry, state)

    def _backend_now_ms(self) -> int:
        return int(self.clock.time() * 1000) + self._offset_ms


#: Started schedulers, so that a forked child can disarm its copies of them.
_STARTED: weakref.WeakSet[Scheduler] = weakref.WeakSet()


def _disarm_after_fork() -> None:
    for scheduler in list(_STARTED):
        scheduler._after_fork_in_child()
    _STARTED.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_disarm_after_fork)
