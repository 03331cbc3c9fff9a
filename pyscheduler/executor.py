"""DefaultJobExecutor: the worker pool that runs handlers, isolates their failures, and
enforces timeouts by cancelling their tokens.

The pool is a ``concurrent.futures.ThreadPoolExecutor`` capped at ``max_concurrent``, and the
scheduler submits a run only when a slot is free. A handler that ignores its cancelled token
keeps its thread: its slot stays counted as busy until it returns, because pretending
otherwise would start more handlers than the cap.

A pool task is a *lane*, not a single run: it takes submitted runs one after the other until
none is left, and after each it calls ``on_free`` (where the scheduler claims the next due
occurrence for the slot just freed). On the memory backend a burst of 10,000 occurrences
then costs 10 pool tasks instead of 10,000, and no thread hand-off per run: that hand-off
(waking another thread and waiting for the GIL) costs more than everything else a run does.
A lane busy recording a result does not hold up a run submitted meanwhile: that run gets a
lane of its own.
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from .backends.base import Claim, Lease, encodable
from .clock import Clock, SystemClock
from .context import JobContext, _reset_current, _set_current
from .job import Job
from .observability import Logger, MetricsCollector, NoOpMetrics, SafeHooks, StandardLogger

__all__ = ["TIMEOUT_GRACE", "DefaultJobExecutor", "Run", "describe_error", "start_lag"]

#: Seconds a handler has to return once its timeout cancelled its token. One that does is
#: recorded as timed out like any failure; one that ignores the cancellation is settled
#: without it (its retry then waits for its lease to run out, so the two never overlap).
TIMEOUT_GRACE = 1.0


@dataclass(eq=False)
class Run:
    """One attempt of one occurrence, from claim to return.

    ``timed_out`` is set when its timeout cancelled its token; ``settled`` once the attempt's
    outcome was decided without waiting for the handler (it ignored the cancellation past
    :data:`TIMEOUT_GRACE`): whatever the handler does afterwards is only logged.
    """

    job: Job
    claim: Claim
    context: JobContext
    deadline: Optional[float]
    started: float = 0.0
    timed_out: bool = False
    settled: bool = False
    returned: bool = False  # the handler returned; its result is being recorded
    #: set once the run is over (its result handed over); made by
    #: :meth:`DefaultJobExecutor.unfinished`, since only a shutdown waits for runs
    done: Optional[threading.Event] = None
    #: the lease this run holds
    lease: Lease = field(init=False)

    def __post_init__(self) -> None:
        self.lease = Lease(self.claim.job_name, self.claim.owner, self.claim.fence)


#: ``on_done(run, error, duration)``: called on the worker thread when a handler returned.
DoneCallback = Callable[[Run, Optional[BaseException], float], None]


class DefaultJobExecutor:
    """Runs handlers on a bounded thread pool.

    :param logger: where handler failures are logged (with traceback).
    :param metrics: told when attempts start, succeed, fail and time out.
    """

    def __init__(
        self,
        logger: Optional[Logger] = None,
        metrics: Optional[MetricsCollector] = None,
        *,
        clock: Optional[Clock] = None,
    ) -> None:
        self._hooks = SafeHooks(logger or StandardLogger(), metrics or NoOpMetrics())
        self._clock: Clock = clock or SystemClock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._capacity = 0
        self._running: dict[str, Run] = {}  # by claim owner token
        self._unfinished: dict[str, Run] = {}  # ... and those whose result is still being recorded
        self._mutex = threading.Lock()
        self._ready: deque[Run] = deque()  # submitted, waiting for a lane to take them
        self._lanes = 0  # pool tasks taking runs from _ready
        self._recording = 0  # ... of which busy recording a result, not free to take one
        # Runs with a timeout among them: most jobs have none, and then the per-tick scans
        # for overdue runs are skipped.
        self._timed = 0
        self._idle = threading.Condition(self._mutex)
        self._on_done: Optional[DoneCallback] = None
        self._on_free: Callable[[], object] = lambda: None

    def bind_log_fields(self, **fields: object) -> None:
        """Name ``fields`` in every message this part logs from now on: the scheduler binds
        its ``instance`` at each start (see :meth:`SafeHooks.bind`)."""
        self._hooks.bind(**fields)

    def start(self, max_concurrent: int, on_done: DoneCallback, clock: Clock,
              on_free: Callable[[], object] = lambda: None) -> None:
        """Create the pool; ``on_done`` receives every handler's result, and ``on_free`` is
        called on the worker right after, before the run counts as over (for
        :meth:`wait_idle`) and before the worker looks for another run."""
        self._clock = clock
        self._capacity = max_concurrent
        self._on_done = on_done
        self._on_free = on_free
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="pyscheduler-worker")

    def shutdown(self) -> None:
        """Stop accepting runs; threads of handlers still running are left to finish."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def free_slots(self) -> int:
        """Workers free to start a handler now (stuck, timed-out handlers count as busy)."""
        # No lock: len() of a dict is atomic, and the answer may be stale the moment the
        # lock were released anyway (only the claimer, one at a time, fills slots).
        return self._capacity - len(self._running)

    def running_names(self) -> list[str]:
        """The names of the jobs whose handlers run now (a timed-out one that ignores its
        cancellation included), sorted, each once."""
        with self._mutex:
            return sorted({run.job.name for run in self._running.values()})

    def unfinished(self) -> list[Run]:
        """The runs not done yet (handlers still running, or their results being recorded),
        each with its ``done`` event."""
        with self._mutex:
            runs = list(self._unfinished.values())
            for run in runs:
                if run.done is None:
                    run.done = threading.Event()
            return runs

    def submit(self, run: Run) -> None:
        """Start ``run`` on a free worker."""
        assert self._pool is not None, "start() the executor first"
        run.started = self._clock.monotonic()
        owner = run.claim.owner
        with self._mutex:
            self._running[owner] = run
            self._unfinished[owner] = run
            self._timed += run.deadline is not None
            self._ready.append(run)
            # A lane between two runs takes this one; open another if every lane is busy
            # with a run of its own or recording one's result (a round trip, with Redis).
            new_lane = self._lanes - self._recording < len(self._running)
            self._lanes += new_lane
        if not new_lane:
            return
        try:
            self._pool.submit(self._lane)
        except BaseException:
            with self._mutex:
                self._lanes -= 1
                if run in self._ready:
                    self._ready.remove(run)
                    self._running.pop(owner, None)
                    self._unfinished.pop(owner, None)
                    self._timed -= run.deadline is not None
                    self._idle.notify_all()
            raise

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait (in real time) until every submitted run returned and its result was handed
        over. :returns: whether that happened within ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._unfinished, timeout)

    def expire_overdue(self, now: float) -> list[Run]:
        """Cancel the runs past their timeout; settle those whose handler did not return
        within :data:`TIMEOUT_GRACE` of it.

        :returns: the runs to settle as timed out now, without their handlers.
        """
        if not self._timed:
            return []
        with self._mutex:
            overdue = [run for run in self._running.values()
                       if not run.settled and not run.returned and run.deadline is not None
                       and run.deadline <= now]
            cancelled = [run for run in overdue if not run.timed_out]
            ignored = [run for run in overdue if run.timed_out]
            for run in cancelled:
                run.timed_out = True
                run.deadline = now + TIMEOUT_GRACE
            for run in ignored:
                run.settled = True
        for run in cancelled:
            run.context.token.cancel(f"timed out after {run.job.timeout:g} s")
            self._hooks.metric("job_timed_out", run.job.name)
        return ignored

    def next_deadline(self) -> Optional[float]:
        """The earliest timeout among unsettled runs, on the monotonic clock."""
        if not self._timed:
            return None
        with self._mutex:
            deadlines = [run.deadline for run in self._running.values()
                         if not run.settled and not run.returned and run.deadline is not None]
        return min(deadlines, default=None)

    def execute(self, job: Job, ctx: JobContext) -> Optional[BaseException]:
        """Call the handler in this thread, isolating whatever it raises.

        :returns: the exception the handler raised, or ``None`` on success.
        """
        reset = _set_current(ctx)
        try:
            job.call_handler(ctx)
            return None
        # Everything, SystemExit included: a handler must never take a worker thread down.
        except BaseException as exc:
            return exc
        finally:
            _reset_current(reset)

    def _lane(self) -> None:
        ended: Optional[Run] = None
        while True:
            with self._mutex:
                # The run this lane ended counts as over here, under the lock the lane takes
                # anyway for its next run: one acquisition per run fewer.
                done = None if ended is None else self._over(ended)
                run = self._ready.popleft() if self._ready else None
                if run is None:
                    self._lanes -= 1
            if done is not None:
                done.set()
            if run is None:
                return
            self._run(run)
            ended = run

    def _over(self, run: Run) -> Optional[threading.Event]:
        """Under the mutex: ``run``'s result is handed over (see :meth:`wait_idle`)."""
        self._recording -= 1
        self._unfinished.pop(run.claim.owner, None)
        if not self._unfinished:
            self._idle.notify_all()
        return run.done

    def _run(self, run: Run) -> None:
        hooks, name, attempt = self._hooks, run.job.name, run.claim.attempt
        hooks.metric("job_started", name)
        if hooks.has_metric("attempt_started"):
            hooks.metric("attempt_started", name, attempt, run.context.scheduled_at,
                         start_lag(run, self._clock.monotonic()))
        error = self.execute(run.job, run.context)
        duration = self._clock.monotonic() - run.started
        if hooks.has_metric("attempt_ended"):
            hooks.metric("attempt_ended", name, attempt, duration)
        with self._mutex:
            run.returned = True
            # The slot is free once the handler returned: recording the result is quick, and
            # a run submitted meanwhile waits for this lane only that long.
            self._running.pop(run.claim.owner, None)
            self._timed -= run.deadline is not None
            self._recording += 1
        try:
            if self._on_done is not None:
                self._on_done(run, error, duration)
        except BaseException:
            self._hooks.log("error", "recording a job's result failed; the next tick "
                            "retries it", job=run.job.name,
                            traceback=traceback.format_exc())
        try:
            # Before the run counts as over: on_free may be what records its result.
            self._on_free()
        except BaseException:  # the scheduler's tick still claims for this slot
            self._hooks.log("error", "on_free failed", traceback=traceback.format_exc())


def start_lag(run: Run, now: float) -> float:
    """Seconds from ``run``'s scheduled time to its start at ``now`` (monotonic): on the
    backend's clock up to the claim, which decided it was due, then on this host's monotonic
    clock since the run was submitted, so that no clock skew between hosts enters it."""
    claim = run.claim
    return max(0.0, (claim.claimed_at_ms - claim.scheduled_ms) / 1000 + (now - run.started))


def describe_error(error: BaseException) -> str:
    """``Type: message`` for ``last_error`` and metrics, encodable as UTF-8 (a lone
    surrogate in the message becomes its escape)."""
    text = str(error)
    return encodable(f"{type(error).__name__}: {text}" if text else type(error).__name__)
