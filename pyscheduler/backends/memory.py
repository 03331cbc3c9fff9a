"""MemoryBackend: the embedded default, shared by the schedulers of one process.

Every transition of the contract in :mod:`pyscheduler.backends.base` runs under one lock, so
two ``Scheduler`` objects on one ``MemoryBackend`` never run the same occurrence twice; what
each claim and outcome does is decided by :mod:`.claim_rules`, and applied here. The due
index is a heap with lazy deletion: finding due work costs O(k log n), not a scan. The run
history is kept beside each job (bounded by the ``history_limit`` of the outcomes and of the
claim requests that abandon an occurrence) and for the group (bounded by
``GROUP_HISTORY_LIMIT``), as plain tuples.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from dataclasses import replace
from itertools import islice
from typing import Optional, Sequence

from ..clock import Clock, SystemClock
from .base import (
    GROUP_HISTORY_LIMIT,
    Backend,
    Claim,
    ClaimBatch,
    ClaimRequest,
    DueEntry,
    InstanceInfo,
    JobDefinition,
    JobState,
    Lease,
    OccurrenceStatus,
    Outcome,
    RunOutcome,
    RunRecord,
    encodable,
    run_outcome,
    schedule_changed,
    truncated_error,
)
from .claim_rules import (
    ABANDON,
    ABANDONED_ERROR,
    RESEND,
    RETRY_WAIT,
    SETTLE_SUCCEEDED,
    SKIP,
    SUPERSEDED,
    Take,
    decide_claim,
    decide_finish,
    due_time,
    owns,
    retry_at_ms,
)

__all__ = ["MemoryBackend"]

_RUNNING = OccurrenceStatus.RUNNING
_RETRY_WAIT = OccurrenceStatus.RETRY_WAIT
_INTERRUPTED = OccurrenceStatus.INTERRUPTED

#: A run-history record as kept here: the fields of a :class:`RunRecord`, in order.
_Run = tuple[str, int, int, str, str, int, int, float, str, str]


class _Record:
    """One job's stored state, flat like a row (a :class:`~.claim_rules.StoredJob`): its
    definition, schedule and counters, and the latest claim with its occurrence in flight
    (``status`` ``""`` for none). The claim's fields stay after the occurrence settled, so
    that a re-sent claim is answered from them, as on Redis.

    One slotted object per job, mutated in place: the backend may hold 100,000 jobs, and an
    object made per claim and kept for the job's lifetime would be promoted to the
    collector's oldest generation after every claim, making full collections (tens of ms with
    10,000 jobs, stalling every thread) several times more frequent.
    """

    __slots__ = ("attempt", "claimed_at_ms", "consecutive_failures", "description", "due_ms",
                 "failure_count", "fence", "history", "kind", "last_duration", "last_error",
                 "last_failed", "last_run_ms", "last_success_ms", "lease_expires_ms",
                 "lease_ms", "manual_at_ms", "name", "next_run_ms", "owner", "paused",
                 "recoveries", "retry_at_ms", "run_count", "scheduled_ms", "status",
                 "version")

    def __init__(self, definition: JobDefinition) -> None:
        self.name = definition.name
        self.version = definition.version  # of the definition last registered
        # Shared with the registering definition, never mutated: the description is only
        # replaced as a whole.
        self.description = definition.description
        self.next_run_ms = definition.first_run_ms
        self.paused = definition.start_paused
        self.due_ms: Optional[int] = None
        self.manual_at_ms: Optional[int] = None
        self.fence = self.run_count = self.failure_count = self.consecutive_failures = 0
        self.last_run_ms: Optional[int] = None
        self.last_success_ms: Optional[int] = None
        self.last_error = ""
        self.last_duration: Optional[float] = None
        self.last_failed = False
        self.owner = self.kind = self.status = ""
        self.scheduled_ms = self.attempt = self.claimed_at_ms = self.lease_ms = 0
        self.lease_expires_ms = self.recoveries = 0
        self.retry_at_ms: Optional[int] = None
        # The job's run history, newest first: a tuple of tuples of plain values, rebuilt
        # at each run (a few dozen pointers), rather than a deque, which the garbage
        # collector would track for each of 100,000 jobs.
        self.history: tuple[_Run, ...] = ()


class MemoryBackend(Backend):
    """A thread-safe in-process backend; see :class:`~pyscheduler.backends.base.Backend`.

    :param clock: the clock deciding due-ness and lease expiry; share the scheduler's.
    """

    def __init__(self, clock: Optional[Clock] = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._removed: set[str] = set()
        self._index: list[tuple[int, str]] = []
        self._last_fence = 0
        #: live instances: id -> (record, expiry in epoch ms)
        self._instances: dict[str, tuple[InstanceInfo, int]] = {}
        #: the group's recent runs across jobs, newest first
        self._history: deque[_Run] = deque(maxlen=GROUP_HISTORY_LIMIT)
        self._members_epoch = 0  # counts the changes of the set of live instances
        self._removals_epoch = 0  # counts the jobs removed

    def __repr__(self) -> str:
        return f"MemoryBackend(jobs={len(self._records)})"

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to close; the state stays for other schedulers sharing this backend."""

    def now_ms(self) -> int:
        """The injected clock in epoch milliseconds."""
        return int(self._clock.time() * 1000)

    @property
    def address(self) -> str:
        """A human-readable name of the store, for error messages."""
        return "memory"

    # -- registration and management ---------------------------------------------------------

    def register(self, definitions: Sequence[JobDefinition]) -> list[JobState]:
        with self._lock:
            states = []
            for definition in definitions:
                self._removed.discard(definition.name)
                record = self._records.get(definition.name)
                if record is None:
                    record = self._records[definition.name] = _Record(definition)
                    self._reindex(record)
                else:
                    self._redefine(record, definition)
                states.append(self._snapshot(record))
            return states

    def _redefine(self, record: _Record, definition: JobDefinition) -> None:
        record.description = definition.description
        if not definition.version or definition.version == record.version:
            return
        if (record.version and record.next_run_ms is not None
                and schedule_changed(record.version, definition.version)):
            # The new schedule's occurrences from now on; none of the old one's is claimed.
            # A job with no occurrence left (a one-time job that ran) stays done.
            record.next_run_ms = definition.first_run_ms
            self._reindex(record)
        record.version = definition.version

    def pause(self, name: str) -> DueEntry:
        return self._update(name, paused=True)

    def resume(self, name: str) -> DueEntry:
        return self._update(name, paused=False)

    def _update(self, name: str, *, paused: bool) -> DueEntry:
        with self._lock:
            record = self._records.get(name)
            if record is None:
                return self._unknown(name)
            record.paused = paused
            self._reindex(record)
            return self._due_entry(record)

    def remove(self, name: str) -> bool:
        with self._lock:
            # The index entry goes stale and is dropped lazily when it reaches the top.
            if self._records.pop(name, None) is None:
                return False
            self._removed.add(name)
            if any(run[0] == name for run in self._history):
                self._history = deque((run for run in self._history if run[0] != name),
                                      maxlen=GROUP_HISTORY_LIMIT)
            self._removals_epoch += 1
            return True

    def run_now(self, name: str) -> DueEntry:
        with self._lock:
            record = self._records.get(name)
            if record is None:
                return self._unknown(name)
            if record.manual_at_ms is None:
                record.manual_at_ms = self.now_ms()
            self._reindex(record)
            return self._due_entry(record)

    def get_states(self, names: Sequence[str]) -> list[Optional[JobState]]:
        with self._lock:
            records = [self._records.get(name) for name in names]
            return [None if record is None else self._snapshot(record) for record in records]

    def job_names(self) -> list[str]:
        with self._lock:
            return sorted(self._records)

    # -- live instances ----------------------------------------------------------------------

    def heartbeat(self, info: InstanceInfo, ttl_ms: int) -> list[InstanceInfo]:
        with self._lock:
            now = self.now_ms()
            self._drop_expired(now)
            if info.instance_id not in self._instances:
                self._members_epoch += 1
            self._instances[info.instance_id] = (replace(info, last_heartbeat_ms=now),
                                                 now + max(1, int(ttl_ms)))
            return self._live(now)

    def _drop_expired(self, now: int) -> None:
        for instance_id, (_, expires_ms) in list(self._instances.items()):
            if expires_ms <= now:
                del self._instances[instance_id]
                self._members_epoch += 1

    def instances(self) -> list[InstanceInfo]:
        with self._lock:
            return self._live(self.now_ms())

    def leave(self, instance_id: str) -> None:
        with self._lock:
            if self._instances.pop(instance_id, None) is not None:
                self._members_epoch += 1

    def _live(self, now: int) -> list[InstanceInfo]:
        return [info for _, (info, expires_ms) in sorted(self._instances.items())
                if expires_ms > now]

    # -- run history -------------------------------------------------------------------------

    def history(self, name: Optional[str], limit: int) -> list[RunRecord]:
        with self._lock:
            if name is None:
                runs: Sequence[_Run] = list(islice(self._history, max(0, limit)))
            else:
                record = self._records.get(name)
                runs = () if record is None else record.history[:max(0, limit)]
        return [RunRecord(*run) for run in runs]

    def _remember(self, record: _Record, limit: int, duration: float, outcome: str,
                  error: str) -> None:
        """Record the latest claim's attempt, finished or abandoned, keeping ``limit`` of the
        job's records."""
        run: _Run = (record.name, record.scheduled_ms, record.attempt, record.kind,
                     record.owner, record.fence, record.claimed_at_ms, float(duration),
                     outcome, truncated_error(error))
        record.history = (run,) + record.history[:limit - 1]
        self._history.appendleft(run)

    # -- claiming ----------------------------------------------------------------------------

    def claim(
        self, instance_id: str, requests: Sequence[ClaimRequest], lease_ms: int, peek: int
    ) -> ClaimBatch:
        with self._lock:
            now = self.now_ms()
            claims: list[Claim] = []
            refused: list[DueEntry] = []
            skipped: list[str] = []
            abandoned: list[str] = []
            for request in requests:
                record = self._records.get(request.job_name)
                if record is None:
                    refused.append(self._unknown(request.job_name))
                    continue
                decision = decide_claim(record, request, now)
                if isinstance(decision, Take):
                    claims.append(self._take(record, decision, request.owner, now, lease_ms))
                    continue
                if decision is RESEND:
                    claims.append(self._claim_of(record))
                    continue
                if decision is SKIP:
                    record.next_run_ms = request.following_ms
                    self._reindex(record)
                    skipped.append(record.name)
                elif decision is ABANDON:
                    self._abandon(record, request.history_limit, now)
                    abandoned.append(record.name)
                refused.append(DueEntry(record.name, record.due_ms, record.next_run_ms,
                                        superseded=decision is SUPERSEDED))
            due: list[DueEntry] = []
            if peek > 0:
                requested = {request.job_name for request in requests}
                due = [entry for entry in self._due_entries(now, peek + len(requested))
                       if entry.name not in requested][:peek]
            return ClaimBatch(claims, refused, due, skipped, abandoned, now,
                              self._members_epoch, self._removals_epoch)

    def _take(self, record: _Record, take: Take, owner: str, now: int, lease_ms: int) -> Claim:
        # Floored at the clock in µs, as on Redis, and above every fence handed out here: a
        # job removed and registered again starts from a fresh state, not from its fence.
        fence = max(record.fence + 1, int(self._clock.time() * 1_000_000),
                    self._last_fence + 1)
        self._last_fence = record.fence = fence
        (record.kind, record.scheduled_ms, record.attempt, record.next_run_ms,
         record.manual_at_ms, record.recoveries) = take
        record.owner, record.status, record.retry_at_ms = owner, _RUNNING, None
        record.claimed_at_ms, record.lease_ms = now, lease_ms
        record.lease_expires_ms = now + lease_ms
        self._reindex(record)
        return self._claim_of(record)

    def _abandon(self, record: _Record, history_limit: int, now: int) -> None:
        if history_limit > 0:  # from the abandoned claim's fields, which settling keeps
            self._remember(record, history_limit, 0.0, RunOutcome.ABANDONED, ABANDONED_ERROR)
        self._settle(record, False, ABANDONED_ERROR, now)

    @staticmethod
    def _claim_of(record: _Record) -> Claim:
        return Claim(record.name, record.owner, record.fence, record.scheduled_ms,
                     record.attempt, record.kind, record.claimed_at_ms, record.lease_ms)

    # -- leases and outcomes -----------------------------------------------------------------

    def refresh(self, leases: Sequence[Lease], lease_ms: int) -> list[bool]:
        with self._lock:
            now = self.now_ms()
            held = []
            for lease in leases:
                record = self._owned_occurrence(lease)
                if record is not None and record.lease_expires_ms <= now:
                    record = None  # run out: another instance may take it over any moment
                if record is not None:
                    record.lease_expires_ms = now + lease_ms
                    self._reindex(record)
                held.append(record is not None)
            return held

    def finish(self, outcomes: Sequence[Outcome]) -> list[Optional[JobState]]:
        with self._lock:
            now = self.now_ms()
            states: list[Optional[JobState]] = []
            for outcome in outcomes:
                record = self._owned_occurrence(outcome.lease)
                if record is None:
                    states.append(None)
                    continue
                self._record_attempt(record, outcome, now)
                states.append(self._snapshot(record))
            return states

    def _record_attempt(self, record: _Record, outcome: Outcome, now: int) -> None:
        error = encodable(outcome.error)  # as RedisBackend stores it
        if outcome.history_limit > 0:
            self._remember(record, outcome.history_limit, outcome.duration,
                           run_outcome(outcome), error)
        record.run_count += 1
        record.last_run_ms = record.claimed_at_ms
        record.last_duration = outcome.duration
        decision = decide_finish(outcome)
        if decision is SETTLE_SUCCEEDED:
            self._settle(record, True, "", now)
            return
        record.last_error = error
        if decision is RETRY_WAIT:
            record.status = _RETRY_WAIT
            record.retry_at_ms = retry_at_ms(record, outcome, now)
            self._reindex(record)
        else:
            self._settle(record, False, error, now)

    def _settle(self, record: _Record, succeeded: bool, error: str, now: int) -> None:
        if succeeded:
            record.last_success_ms, record.consecutive_failures = now, 0
            record.last_failed = False
        else:
            record.failure_count += 1
            record.consecutive_failures += 1
            record.last_error = error or record.last_error
            record.last_failed = True
        record.status, record.retry_at_ms, record.recoveries = "", None, 0
        self._reindex(record)

    def interrupt(self, leases: Sequence[Lease]) -> list[bool]:
        with self._lock:
            now = self.now_ms()
            released = []
            for lease in leases:
                record = self._owned_occurrence(lease)
                released.append(record is not None)
                if record is not None:
                    record.status, record.retry_at_ms = _INTERRUPTED, now
                    self._reindex(record)
            return released

    def _owned_occurrence(self, lease: Lease) -> Optional[_Record]:
        record = self._records.get(lease.job_name)
        if record is None or not owns(record, lease.owner, lease.fence):
            return None
        return record

    # -- the due index -----------------------------------------------------------------------

    def _reindex(self, record: _Record) -> None:
        due = due_time(record)
        if due == record.due_ms and due is not None:
            return  # its index entry is still valid
        record.due_ms = due
        if due is not None:
            heapq.heappush(self._index, (due, record.name))
        if len(self._index) > 2 * len(self._records) + 1024:
            # Stale entries only leave the heap when they reach its top; rebuild it before
            # they outgrow the live ones.
            self._index = [(r.due_ms, name) for name, r in self._records.items()
                           if r.due_ms is not None]
            heapq.heapify(self._index)

    def _due_entries(self, now: int, limit: int) -> list[DueEntry]:
        entries: list[DueEntry] = []
        kept: list[tuple[int, str]] = []
        while self._index and len(entries) < limit and self._index[0][0] <= now:
            due, name = heapq.heappop(self._index)
            record = self._records.get(name)
            if record is None or record.due_ms != due or any(n == name for _, n in kept):
                continue  # stale: the job moved, went away, or is listed twice
            kept.append((due, name))
            entries.append(self._due_entry(record))
        for item in kept:
            heapq.heappush(self._index, item)
        return entries

    def _unknown(self, name: str) -> DueEntry:
        return DueEntry(name, None, None, missing=True, removed=name in self._removed)

    @staticmethod
    def _due_entry(record: _Record) -> DueEntry:
        return DueEntry(record.name, record.due_ms, record.next_run_ms)

    @staticmethod
    def _snapshot(record: _Record) -> JobState:
        status = record.status
        return JobState(
            record.name, record.next_run_ms, record.due_ms, record.paused, record.fence,
            record.run_count, record.failure_count, record.consecutive_failures,
            record.last_run_ms, record.last_success_ms, record.last_error,
            record.last_duration, status, record.scheduled_ms if status else None,
            record.attempt if status else 0, record.last_failed, record.description,
            record.owner if status == _RUNNING else "")
