"""What a running handler sees: its occurrence, its fence, and a cooperative cancellation token.

Cancellation is cooperative: a timeout, a lost lease or a shutdown past its deadline sets the
token, and the handler is expected to look at it (``ctx.cancelled``, ``ctx.sleep``,
``ctx.raise_if_cancelled``). pyscheduler never injects exceptions into threads: that cannot
interrupt a blocking system call and can corrupt state at an arbitrary bytecode.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from ._time import Duration, to_seconds
from .clock import Clock, SystemClock
from .errors import JobCancelled

__all__ = ["CancellationToken", "JobContext", "current_job"]


class CancellationToken:
    """A one-way flag with a reason: once cancelled, it stays cancelled."""

    def __init__(self) -> None:
        self._cancelled = False
        # Most runs are never waited on: the event is made only when somebody waits.
        self._event: Optional[threading.Event] = None
        self.reason = ""

    def cancel(self, reason: str) -> None:
        """Set the token; the first reason given is the one kept."""
        with _TOKEN_LOCK:
            if self._cancelled:
                return
            self.reason = reason
            self._cancelled = True
            event = self._event
        if event is not None:
            event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    @property
    def event(self) -> threading.Event:
        """An event set once the token is cancelled, to wait on."""
        with _TOKEN_LOCK:
            if self._event is None:
                self._event = threading.Event()
                if self._cancelled:
                    self._event.set()
            return self._event


_TOKEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class JobContext:
    """Passed to a handler that takes one argument.

    :ivar job_name: the job's name.
    :ivar scheduled_at: the occurrence's nominal time, tz-aware UTC (for a retry or a
        recovery, still the occurrence it repeats).
    :ivar attempt: 1 for the first try of an occurrence, 2 for the next, and so on.
    :ivar deadline: when the job's timeout cancels this run (UTC), or ``None``.
    :ivar fencing_token: strictly increasing per job across every instance of the group;
        pass it to downstream systems so they can reject writes from a stale run.
    :ivar kind: ``regular``, ``retry``, ``recovery`` (a previous holder died or shut down
        mid-run) or ``manual`` (``run_now``).
    """

    job_name: str
    scheduled_at: datetime
    attempt: int
    deadline: Optional[datetime]
    fencing_token: int
    kind: str = "regular"
    token: CancellationToken = field(default_factory=CancellationToken, repr=False)
    clock: Clock = field(default_factory=SystemClock, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """Whether this run should stop: timed out, lease lost, or shutting down."""
        return self.token.cancelled

    @property
    def cancel_reason(self) -> str:
        """Why the run was cancelled, or ``""``."""
        return self.token.reason

    @property
    def is_recovery(self) -> bool:
        """Whether this attempt re-runs an occurrence whose previous holder stopped mid-run."""
        return self.kind == "recovery"

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~pyscheduler.JobCancelled` if the run was cancelled."""
        if self.token.cancelled:
            raise JobCancelled(self.token.reason)

    def sleep(self, seconds: Duration) -> bool:
        """Sleep up to ``seconds``, returning early once cancelled.

        :returns: ``True`` if the full time passed, ``False`` if cancelled.
        """
        return not self.clock.wait(self.token.event, to_seconds(seconds, "seconds"))


_current: contextvars.ContextVar[Optional[JobContext]] = contextvars.ContextVar(
    "pyscheduler_current_job", default=None
)


def current_job() -> Optional[JobContext]:
    """The context of the job running in this thread, or ``None`` outside a job.

    Lets code deep inside a handler reach the cancellation token without passing it down.
    """
    return _current.get()


def _set_current(ctx: Optional[JobContext]) -> contextvars.Token[Optional[JobContext]]:
    return _current.set(ctx)


def _reset_current(token: contextvars.Token[Optional[JobContext]]) -> None:
    _current.reset(token)
