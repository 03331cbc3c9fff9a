"""DueIndex: one scheduler's view of when each of its jobs is due next.

The scheduler learns due times from the backend's answers and keeps them here, so that a
claim asks the backend once for a whole batch of due occurrences instead of scanning. The
backend stays the authority: a stale entry only costs a refused claim, whose answer corrects
it.

The index is a heap of ``(due_ms, name)`` with lazy deletion: when a job's due time changes, a
new item is pushed and the old one is dropped when it reaches the top, so every operation is
O(log n) in the number of jobs. A job whose handler still runs here is not indexed; it is
indexed again when the run ends. A job another instance owns (:mod:`pyscheduler.ownership`)
is *parked*: its last learnt due time is kept, but not indexed, so it is never claimed on
time from here.
"""

from __future__ import annotations

import heapq
import threading
from typing import Optional

from .errors import DuplicateJobError
from .job import Job

__all__ = ["DueIndex", "IndexEntry"]


class IndexEntry:
    """This instance's view of one registered job."""

    __slots__ = ("armed", "due_ms", "job", "next_run_ms", "running", "superseded")

    def __init__(self, job: Job) -> None:
        self.job = job
        #: the stored due time last learnt; ``None`` while a claim for it is in flight
        self.due_ms: Optional[int] = None
        #: the stored next regular run last learnt
        self.next_run_ms: Optional[int] = None
        #: runs of this job in this process whose handlers have not returned
        self.running = 0
        #: the group runs another definition of the job (registered by another instance)
        self.superseded = False
        #: whether the due time is indexed (claimed when due) rather than parked
        self.armed = True


class DueIndex:
    """The registered jobs by name, and their due times in order. Thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[str, IndexEntry] = {}
        self._heap: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        #: counts the changes of the set of jobs (a job's definition never changes here)
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- the jobs ----------------------------------------------------------------------------

    def add(self, job: Job) -> IndexEntry:
        """:raises DuplicateJobError: a job of that name is registered already."""
        with self._lock:
            if job.name in self._entries:
                raise DuplicateJobError(job.name)
            entry = self._entries[job.name] = IndexEntry(job)
            self.generation += 1
            return entry

    def get(self, name: str) -> Optional[IndexEntry]:
        return self._entries.get(name)

    def remove(self, name: str) -> Optional[IndexEntry]:
        """Forget the job (its heap items go stale); :returns: its entry, if it had one."""
        with self._lock:
            self.generation += 1
            return self._entries.pop(name, None)

    def discard(self, entry: IndexEntry) -> bool:
        """Forget ``entry`` if it is still the one registered under its name."""
        with self._lock:
            if self._entries.get(entry.job.name) is not entry:
                return False
            del self._entries[entry.job.name]
            self.generation += 1
            return True

    def entries(self) -> list[IndexEntry]:
        with self._lock:
            return list(self._entries.values())

    # -- due times ---------------------------------------------------------------------------

    def set_due(self, entry: IndexEntry, due_ms: Optional[int],
                next_run_ms: Optional[int], *, armed: bool = True) -> None:
        """Record what the backend said; index the due time if ``armed`` and no run of the
        job is still going here (it is indexed when that run ends), else park it."""
        with self._lock:
            entry.next_run_ms = next_run_ms
            entry.due_ms = due_ms
            entry.armed = armed
            if armed and due_ms is not None and not entry.running:
                heapq.heappush(self._heap, (due_ms, entry.job.name))

    def park(self, entry: IndexEntry) -> None:
        """Stop watching the job's due time (it keeps the value last learnt)."""
        with self._lock:
            entry.armed = False  # its heap items are stale from now on

    def take_due(self, now_ms: int, limit: int) -> list[tuple[IndexEntry, int]]:
        """Up to ``limit`` jobs due by ``now_ms``, earliest first, with the due time each was
        indexed under; they leave the index until :meth:`set_due` (their claim's answer)."""
        taken: list[tuple[IndexEntry, int]] = []
        with self._lock:
            heap = self._heap
            while heap and len(taken) < limit and heap[0][0] <= now_ms:
                due, name = heapq.heappop(heap)
                entry = self._entries.get(name)
                if entry is None or entry.due_ms != due or entry.running or not entry.armed:
                    continue  # stale item
                entry.due_ms = None  # in flight
                taken.append((entry, due))
        return taken

    def earliest(self) -> Optional[int]:
        """The earliest indexed due time, dropping stale items on the way."""
        with self._lock:
            heap = self._heap
            while heap:
                due, name = heap[0]
                entry = self._entries.get(name)
                if entry is None or entry.due_ms != due or entry.running or not entry.armed:
                    heapq.heappop(heap)
                    continue
                return due
        return None

    # -- runs --------------------------------------------------------------------------------

    def run_started(self, name: str) -> Optional[IndexEntry]:
        """Count a run of the job as started here; :returns: its entry, or ``None`` if the job
        was removed meanwhile (the run must not start)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                entry.running += 1
                entry.job._local_runs = entry.running
                entry.due_ms = None
            return entry

    def run_ended(self, name: str) -> None:
        """Count a run of the job as over, and index the due time learnt meanwhile."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return
            entry.running = max(0, entry.running - 1)
            entry.job._local_runs = entry.running
            if not entry.running and entry.armed and entry.due_ms is not None:
                heapq.heappush(self._heap, (entry.due_ms, name))
