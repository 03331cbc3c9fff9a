"""What the end of an attempt means, and the queue that records it in the backend.

:func:`decide_outcome` turns a handler's return (or exception, or timeout) into an
:class:`~pyscheduler.backends.base.Outcome`: success, a retry after the policy's delay, or a
failure, reported to the metrics and logs on the way. :class:`OutcomeQueue` records outcomes
in batches: whichever thread finds it idle sends what is queued, with whatever other workers
queue meanwhile, and the others go on at once. A claim may also carry the queue along
(:meth:`OutcomeQueue.take`), so that a worker records its result and claims its next
occurrence in one backend call.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence

from .backends.base import JobState, Outcome
from .executor import Run, describe_error
from .observability import SafeHooks
from .retry import RetryPolicy

__all__ = ["OutcomeQueue", "decide_outcome", "occurrence_fields"]


def decide_outcome(run: Run, error: Optional[BaseException], duration: float,
                   hooks: SafeHooks, *, timed_out: bool = False,
                   still_running: bool = False, history_limit: int = 0) -> Outcome:
    """The outcome of ``run``'s attempt: ``error`` is what its handler raised (``None`` on
    success); ``timed_out`` says its timeout passed, and ``still_running`` that it is settled
    while its handler goes on (see :attr:`~pyscheduler.backends.base.Outcome.still_running`).
    ``history_limit`` is the config's: the backend records the attempt in the run history
    when it records the outcome."""
    job, attempt = run.job, run.claim.attempt
    if error is None and not timed_out:
        hooks.metric("job_completed", job.name, duration)
        if hooks.logs("info"):
            hooks.log("info", "job succeeded", job=job.name, attempt=attempt,
                      seconds=round(duration, 4), **occurrence_fields(run))
        return Outcome(run.lease, True, duration=duration, history_limit=history_limit)
    text = (f"timed out after {job.timeout:g} s" if timed_out
            else describe_error(error) if error is not None else "failed")
    hooks.metric("job_failed", job.name, text)
    policy: Optional[RetryPolicy] = job.retry_policy
    retry = policy is not None and policy.should_retry(attempt, error)
    fields: dict[str, object] = {"job": job.name, "attempt": attempt, "error": text,
                                 **occurrence_fields(run)}
    if error is not None:
        fields["exc_info"] = error
    if retry and policy is not None:
        delay = policy.delay(attempt)
        hooks.metric("job_retried", job.name, attempt + 1, delay)
        hooks.log("warning", "job failed; will retry", retry_in=round(delay, 3), **fields)
        return Outcome(run.lease, False, text, duration, retry_delay_ms=int(delay * 1000),
                       still_running=still_running, timed_out=timed_out,
                       history_limit=history_limit)
    hooks.log("error", "job failed", **fields)
    return Outcome(run.lease, False, text, duration, timed_out=timed_out,
                   history_limit=history_limit)


def occurrence_fields(run: Run) -> dict[str, object]:
    """The log fields that tie an attempt's outcome to its occurrence and lease, as the
    "job started" message gives them."""
    return {"scheduled_at": run.context.scheduled_at.isoformat(), "fence": run.claim.fence}


#: ``finish(outcomes)``: records them, returning each job's new state (``None``: stale).
Finish = Callable[[Sequence[Outcome]], Sequence[Optional[JobState]]]
#: ``recorded(run, state)``: called for each recorded outcome, in order.
Recorded = Callable[[Run, Optional[JobState]], None]


class OutcomeQueue:
    """Outcomes waiting to be recorded, sent in batches.

    :param finish: records a batch (one backend call).
    :param recorded: told the new state of each run's job once its batch is recorded.
    """

    def __init__(self, finish: Finish, recorded: Recorded) -> None:
        self._finish = finish
        self._recorded = recorded
        self._queue: list[tuple[Run, Outcome]] = []
        self._sending = False
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # notified when nothing is left

    def report(self, run: Run, outcome: Outcome) -> None:
        """Queue ``outcome``, and send the queue unless another thread is sending it."""
        with self._lock:
            self._queue.append((run, outcome))
            if self._sending:
                return  # the thread sending takes it with its next batch
            self._sending = True
        self._drain()

    def add(self, run: Run, outcome: Outcome) -> None:
        """Queue ``outcome`` without sending it: a claim that follows takes it along."""
        with self._lock:
            self._queue.append((run, outcome))

    def take(self) -> list[tuple[Run, Outcome]]:
        """Take the queue to send it along with something else, unless it is being sent
        (then the sender takes what is queued too); call :meth:`sent` or :meth:`failed`."""
        with self._lock:
            if self._sending or not self._queue:
                return []
            self._sending = True
            batch, self._queue = self._queue, []
            return batch

    def sent(self, batch: list[tuple[Run, Outcome]], states: Sequence[Optional[JobState]]
             ) -> None:
        """``batch`` (from :meth:`take`) was recorded, giving ``states``."""
        with self._lock:
            self._sending = False
            self._drained.notify_all()
        for (run, _), state in zip(batch, states):
            self._recorded(run, state)

    def failed(self, batch: list[tuple[Run, Outcome]]) -> None:
        """Sending ``batch`` (from :meth:`take`) failed: queue it again, first."""
        with self._lock:
            self._queue[:0] = batch
            self._sending = False

    def wait_recorded(self, timeout: Optional[float]) -> bool:
        """Wait (in real time) until every queued outcome is recorded; :returns: whether
        that happened within ``timeout`` seconds."""
        with self._drained:
            return self._drained.wait_for(lambda: not self._queue and not self._sending,
                                          timeout)

    def flush(self) -> None:
        """Send what is queued (outcomes a failed send kept), unless it is being sent."""
        with self._lock:
            if self._sending or not self._queue:
                return
            self._sending = True
        self._drain()

    def _drain(self) -> None:
        try:
            while True:
                with self._lock:
                    batch, self._queue = self._queue, []
                if not batch:
                    return
                try:
                    states = self._finish([outcome for _, outcome in batch])
                except Exception:
                    with self._lock:  # keep them for the next flush (the tick retries)
                        self._queue[:0] = batch
                    raise
                for (run, _), state in zip(batch, states):
                    self._recorded(run, state)
        finally:
            with self._lock:
                self._sending = False
                self._drained.notify_all()
