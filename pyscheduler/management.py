"""Management: the changes one scheduler makes to its group's jobs, and what they store.

Registering a job stores its definition (:func:`job_definition`); ``pause``, ``resume``,
``run_now`` and ``remove`` change the stored job, for every scheduler of the group. Before
the scheduler starts none of it reaches the backend: the calls are recorded, and played at
start once the jobs are stored. After, each goes to the backend at once, and its answer
updates the local index as a claim's answer would (:class:`~pyscheduler.claiming.Claimer`):
a job the backend lost is re-created and asked again, one removed elsewhere is never brought
back, and one asked for here is claimed from here, whoever owns it.

This is not the facade (:class:`~pyscheduler.Scheduler` checks its state and takes its lock
before calling in here), nor the claim path.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Optional

from ._time import to_ms
from .backends.base import Backend, DueEntry, JobDefinition
from .due_index import DueIndex, IndexEntry
from .errors import JobNotFoundError
from .job import Job
from .schedules import OnceSchedule

__all__ = ["Management", "job_definition", "rebuilt_definition"]

if TYPE_CHECKING:
    from .claiming import Claimer


def job_definition(job: Job, now: datetime) -> JobDefinition:
    """What registering ``job`` at ``now`` stores: its first regular occurrence after now
    (a one-time job's run time even if past: it still runs once), description and version."""
    if isinstance(job.schedule, OnceSchedule):
        first: Optional[datetime] = job.schedule.run_at
    else:
        first = job.schedule.next_after(now)
    return JobDefinition(job.name, None if first is None else to_ms(first),
                         job.stored_description(), start_paused=not job.enabled,
                         version=job.definition_version)


def rebuilt_definition(entry: IndexEntry, now: datetime) -> JobDefinition:
    """What re-creating a job the backend lost (data loss, corrupt state) stores at ``now``:
    its definition, continuing from what this instance last saw of it."""
    definition = job_definition(entry.job, now)
    first = definition.first_run_ms
    if first is not None:
        # Never earlier than the next occurrence this instance knew of: it may have run
        # everything before it (and with none left, a one-time job that ran stays done).
        # Missed occurrences are not replayed (R15).
        first = None if entry.next_run_ms is None else max(first, entry.next_run_ms)
    return replace(definition, first_run_ms=first)


class Management:
    """Registration and the management calls of one scheduler, before and after its start.

    The caller serializes the calls made before start with :meth:`take_pending` (the
    scheduler's lock); after start each call is independent, as the backend's are.
    """

    def __init__(self, backend: Backend, index: DueIndex, claimer: Claimer) -> None:
        self._backend, self._index, self._claimer = backend, index, claimer
        #: (operation, job name) of the calls made before start, in order
        self._pending: list[tuple[str, str]] = []

    # -- before start ------------------------------------------------------------------------

    def record(self, op: str, name: str, entry: Optional[IndexEntry]) -> None:
        """Keep ``pause``, ``resume`` or ``run_now`` for the start; a paused job is then
        stored paused. :raises JobNotFoundError: no such job here."""
        if entry is None:
            raise JobNotFoundError(name)
        self._pending.append((op, name))
        if op in ("pause", "resume"):
            entry.job.enabled = op == "resume"

    def forget(self, name: str, entry: Optional[IndexEntry]) -> None:
        """A job removed before start: nothing recorded for it is played.
        :raises JobNotFoundError: no such job here."""
        if entry is None:
            raise JobNotFoundError(name)
        self._pending = [op for op in self._pending if op[1] != name]

    def take_pending(self) -> list[tuple[str, str]]:
        """The calls recorded before start, for :meth:`register_all`; none are kept."""
        pending, self._pending = self._pending, []
        return pending

    # -- at start ----------------------------------------------------------------------------

    def register_all(self, entries: list[IndexEntry], pending: list[tuple[str, str]]) -> None:
        """Store the jobs registered before start (one call), then play the calls recorded."""
        # First occurrences count from the backend's clock, which decides due-ness: from
        # this host's, one running fast would skip the occurrences of its lead.
        now = self._claimer.learn_backend_clock()
        states = self._backend.register([job_definition(e.job, now) for e in entries])
        for entry, state in zip(entries, states):
            self._claimer.apply_state(entry, state)
        for op, name in pending:
            self.apply(op, name, self._index.get(name))

    # -- once started ------------------------------------------------------------------------

    def register(self, entry: IndexEntry) -> None:
        """Store a job registered after start; if that fails it is not registered here
        either."""
        try:
            (state,) = self._backend.register([job_definition(entry.job,
                                                              self._claimer.backend_now())])
        except BaseException:
            self._index.discard(entry)
            raise
        self._claimer.apply_state(entry, state)
        self._claimer.wake.set()

    def apply(self, op: str, name: str, entry: Optional[IndexEntry]) -> None:
        """Send ``pause``, ``resume`` or ``run_now`` of the job (``entry``: its entry here,
        if it has one) and learn its due time from the answer.

        :raises JobNotFoundError: no such job here or in the backend, or it was removed
            elsewhere.
        """
        claimer = self._claimer
        due: DueEntry = getattr(self._backend, op)(name)
        if due.missing:
            if entry is None:
                raise JobNotFoundError(name)
            if due.removed:  # elsewhere, and this instance has not heard yet: never undo it
                claimer.apply_due(entry, due)
                raise JobNotFoundError(name)
            claimer.rebuild([entry])  # lost with the backend's data: re-created
            due = getattr(self._backend, op)(name)
        if entry is not None and not due.missing:
            claimer.apply_due(entry, due, armed=True)  # asked here: claimed from here
        claimer.wake.set()

    def remove(self, name: str, entry: Optional[IndexEntry]) -> None:
        """Remove the stored job (``entry``: its entry here, already dropped, if it had one).
        :raises JobNotFoundError: no such job here or in the backend."""
        if not self._backend.remove(name) and entry is None:
            raise JobNotFoundError(name)

    def read_states(self, entries: list[IndexEntry]) -> None:
        """Refresh the jobs' metadata from their stored states (one call); a job the backend
        no longer stores keeps what this process last saw."""
        states = self._backend.get_states([entry.job.name for entry in entries])
        for entry, state in zip(entries, states):
            if state is not None:
                entry.job._saw(state)
