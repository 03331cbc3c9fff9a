"""What stopping a scheduler waits for, and what it reports left behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ._time import Duration, to_seconds
from .clock import Clock
from .executor import DefaultJobExecutor, Run

__all__ = ["ShutdownReport", "wait_for_runs"]


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


def wait_for_runs(executor: DefaultJobExecutor, clock: Clock,
                  timeout: Optional[Duration]) -> list[Run]:
    """Wait up to ``timeout`` for the executor's runs to be over.

    :returns: the runs still unfinished at the deadline.
    """
    seconds = None if timeout is None else to_seconds(timeout, "timeout")
    deadline = None if seconds is None else clock.monotonic() + seconds
    while True:
        runs = executor.unfinished()
        pending = [(run, run.done) for run in runs if run.done and not run.done.is_set()]
        if not pending:
            return []
        done = pending[0][1]
        if deadline is None:
            done.wait()
            continue
        left = deadline - clock.monotonic()
        if left <= 0:
            return [run for run, _ in pending]
        clock.wait(done, left)
