"""MemoryBackend: the embedded default, shared by the schedulers of one process.

Every transition of the contract in :mod:`pyscheduler.backends.base` runs under one lock, so
two ``Scheduler`` objects on one ``MemoryBackend`` never run the same occurrence twice. The due
index is a heap with lazy deletion: finding due work costs O(k log n), not a scan. The run
history is kept beside each job (bounded by the outcomes' ``history_limit``) and for the
group (bounded by ``GROUP_HISTORY_LIMIT``), as plain tuples.
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
    OccurrenceKind,
    OccurrenceStatus,
    Outcome,
    RunRecord,
    run_outcome,
    schedule_changed,
    superseded,
    truncated_error,
)

__all__ = ["MemoryBackend"]

_RUNNING = OccurrenceStatus.RUNNING
_RETRY_WAIT = OccurrenceStatus.RETRY_WAIT
_INTERRUPTED = OccurrenceStatus.INTERRUPTED


class _Occurrence:
    """The occurrence in flight."""

    __slots__ = ("attempt", "claimed_at_ms", "fence", "kind", "owner", "recoveries",
                 "retry_at_ms", "scheduled_ms", "status")

    def __init__(self, scheduled_ms: int, attempt: int, owner: str, fence: int, kind: str,
                 claimed_at_ms: int, recoveries: int) -> None:
        self.scheduled_ms, self.attempt = scheduled_ms, attempt
        self.owner, self.fence = owner, fence
        self.kind, self.status, self.claimed_at_ms = kind, _RUNNING, claimed_at_ms
        self.retry_at_ms: Optional[int] = None
        self.recoveries = recoveries


#: The fields of :class:`_State`, in :class:`JobState`'s terms.
_STATE_FIELDS = ("name", "next_run_ms", "due_ms", "paused", "fence", "run_count",
                 "failure_count", "consecutive_failures", "last_run_ms", "last_success_ms",
                 "last_error", "last_duration", "last_failed", "description")


class _State:
    """The mutable twin of :class:`JobState` (a snapshot is taken whenever one leaves).

    Slotted, like the other records here: the backend may hold 100,000 jobs.
    """

    __slots__ = _STATE_FIELDS

    def __init__(self, name: str, next_run_ms: Optional[int], paused: bool,
                 description: dict[str, object]) -> None:
        self.name, self.next_run_ms, self.paused = name, next_run_ms, paused
        self.due_ms: Optional[int] = None
        self.fence = self.run_count = self.failure_count = self.consecutive_failures = 0
        self.last_run_ms: Optional[int] = None
        self.last_success_ms: Optional[int] = None
        self.last_error = ""
        self.last_duration: Optional[float] = None
        self.last_failed = False
        # Shared with the registering definition, never mutated: the description is only
        # replaced as a whole.
        self.description = description


#: A run-history record as kept here: the fields of a :class:`RunRecord`, in order.
_Run = tuple[str, int, int, str, str, int, int, float, str, str]


class _Record:
    __slots__ = ("history", "last_claim", "lease_expires_ms", "lease_fence", "lease_owner",
                 "manual_at_ms", "occurrence", "state", "version")

    def __init__(self, state: _State, version: str) -> None:
        self.state = state
        self.version = version  # of the definition last registered
        self.occurrence: Optional[_Occurrence] = None
        self.manual_at_ms: Optional[int] = None
        self.lease_owner = ""
        self.lease_fence = self.lease_expires_ms = 0
        # Only the latest claim can be re-sent (its reply lost), so it is the one kept: as
        # a tuple of its fields, which the garbage collector stops tracking, since 100,000
        # of these live as long as their jobs (see _claim_fields).
        self.last_claim: Optional[tuple[object, ...]] = None
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
                    record = _Record(_State(definition.name, definition.first_run_ms,
                                            definition.start_paused, definition.description),
                                     definition.version)
                    self._records[definition.name] = record
                    self._reindex(record)
                else:
                    self._redefine(record, definition)
                states.append(self._snapshot(record))
            return states

    def _redefine(self, record: _Record, definition: JobDefinition) -> None:
        record.state.description = definition.description
        if not definition.version or definition.version == record.version:
            return
        if (record.version and record.state.next_run_ms is not None
                and schedule_changed(record.version, definition.version)):
            # The new schedule's occurrences from now on; none of the old one's is claimed.
            # A job with no occurrence left (a one-time job that ran) stays done.
            record.state.next_run_ms = definition.first_run_ms
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
            record.state.paused = paused
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

    def _remember(self, record: _Record, occurrence: _Occurrence, outcome: Outcome) -> None:
        run: _Run = (record.state.name, occurrence.scheduled_ms, occurrence.attempt,
                     occurrence.kind, occurrence.owner, occurrence.fence,
                     occurrence.claimed_at_ms, float(outcome.duration), run_outcome(outcome),
                     truncated_error(outcome.error))
        record.history = (run,) + record.history[:outcome.history_limit - 1]
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
                earlier = record.last_claim
                if earlier is not None and earlier[1] == request.owner:
                    claims.append(Claim(*earlier))  # type: ignore[arg-type]
                    continue
                if superseded(record.version, request.definition_version):
                    refused.append(replace(self._due_entry(record), superseded=True))
                    continue
                claim = self._claim_one(record, request, now, lease_ms, skipped, abandoned)
                if claim is None:
                    refused.append(self._due_entry(record))
                else:
                    claims.append(claim)
            due: list[DueEntry] = []
            if peek > 0:
                requested = {request.job_name for request in requests}
                due = [entry for entry in self._due_entries(now, peek + len(requested))
                       if entry.name not in requested][:peek]
            return ClaimBatch(claims, refused, due, skipped, abandoned, now,
                              self._members_epoch, self._removals_epoch)

    def _claim_one(
        self,
        record: _Record,
        request: ClaimRequest,
        now: int,
        lease_ms: int,
        skipped: list[str],
        abandoned: list[str],
    ) -> Optional[Claim]:
        state = record.state
        if state.paused or state.due_ms is None or state.due_ms != request.expected_due_ms:
            return None
        if state.due_ms > now:
            return None
        occurrence = record.occurrence
        if occurrence is not None and occurrence.status == _RETRY_WAIT:
            return self._take(record, request, now, lease_ms, occurrence.scheduled_ms,
                              occurrence.attempt + 1, OccurrenceKind.RETRY)
        if occurrence is not None:  # an orphan (lease ran out) or interrupted at shutdown
            if occurrence.status == _RUNNING and record.lease_expires_ms > now:
                return None
            if occurrence.recoveries >= request.max_recoveries:
                self._settle(record, succeeded=False, error="abandoned: its holder stopped "
                             "before finishing and recovery is exhausted or disabled")
                abandoned.append(state.name)
                return None
            occurrence.recoveries += 1
            return self._take(record, request, now, lease_ms, occurrence.scheduled_ms,
                              occurrence.attempt + 1, OccurrenceKind.RECOVERY)
        if record.manual_at_ms is not None and (
            state.next_run_ms is None or record.manual_at_ms <= state.next_run_ms
        ):
            scheduled = record.manual_at_ms
            record.manual_at_ms = None
            return self._take(record, request, now, lease_ms, scheduled, 1, OccurrenceKind.MANUAL)
        return self._claim_regular(record, request, now, lease_ms, skipped)

    def _claim_regular(
        self, record: _Record, request: ClaimRequest, now: int, lease_ms: int, skipped: list[str]
    ) -> Optional[Claim]:
        state = record.state
        scheduled = request.scheduled_ms
        following = request.following_ms
        if (
            state.next_run_ms is None
            or request.expected_next_run_ms != state.next_run_ms
            or scheduled is None
            or scheduled < state.next_run_ms
            or scheduled > now
            or (following is not None and following <= scheduled)
        ):
            return None
        state.next_run_ms = following
        grace = request.misfire_grace_ms
        if grace is not None and now - scheduled > grace:
            self._reindex(record)
            skipped.append(state.name)
            return None
        return self._take(record, request, now, lease_ms, scheduled, 1, OccurrenceKind.REGULAR)

    def _take(
        self,
        record: _Record,
        request: ClaimRequest,
        now: int,
        lease_ms: int,
        scheduled_ms: int,
        attempt: int,
        kind: str,
    ) -> Claim:
        # Floored at the clock in µs, as on Redis, and above every fence handed out here: a
        # job removed and registered again starts from a fresh state, not from its fence.
        fence = max(record.state.fence + 1, int(self._clock.time() * 1_000_000),
                    self._last_fence + 1)
        self._last_fence = fence
        recoveries = record.occurrence.recoveries if record.occurrence else 0
        record.occurrence = _Occurrence(scheduled_ms, attempt, request.owner, fence, kind, now,
                                        recoveries)
        record.lease_owner, record.lease_fence = request.owner, fence
        record.lease_expires_ms = now + lease_ms
        record.state.fence = fence
        self._reindex(record)
        claim = Claim(record.state.name, request.owner, fence, scheduled_ms, attempt, kind,
                      now, lease_ms)
        record.last_claim = _claim_fields(claim)
        return claim

    # -- leases and outcomes -----------------------------------------------------------------

    def refresh(self, leases: Sequence[Lease], lease_ms: int) -> list[bool]:
        with self._lock:
            now = self.now_ms()
            held = []
            for lease in leases:
                record = self._owned_lease(lease, now)
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
                if record is not None:
                    self._record_attempt(record, outcome, now)
                states.append(None if record is None else self._snapshot(record))
            return states

    def _record_attempt(self, record: _Record, outcome: Outcome, now: int) -> None:
        record.lease_owner = ""
        occurrence = record.occurrence
        assert occurrence is not None
        if outcome.history_limit > 0:
            self._remember(record, occurrence, outcome)
        state = record.state
        state.run_count += 1
        state.last_run_ms = occurrence.claimed_at_ms
        state.last_duration = outcome.duration
        if not outcome.succeeded:
            state.last_error = outcome.error
        if outcome.succeeded:
            self._settle(record, succeeded=True, error="", now=now)
        elif outcome.retry_delay_ms is not None:
            occurrence.status = _RETRY_WAIT
            occurrence.retry_at_ms = now + max(0, outcome.retry_delay_ms)
            if outcome.still_running:
                occurrence.retry_at_ms = max(occurrence.retry_at_ms, record.lease_expires_ms)
            self._reindex(record)
        else:
            self._settle(record, succeeded=False, error=outcome.error)

    def _settle(self, record: _Record, *, succeeded: bool, error: str, now: int = 0) -> None:
        state = record.state
        if succeeded:
            state.last_success_ms, state.consecutive_failures, state.last_failed = now, 0, False
        else:
            state.failure_count += 1
            state.consecutive_failures += 1
            state.last_error = error or state.last_error
            state.last_failed = True
        record.occurrence = None
        record.lease_owner = ""
        self._reindex(record)

    def interrupt(self, leases: Sequence[Lease]) -> list[bool]:
        with self._lock:
            now = self.now_ms()
            released = []
            for lease in leases:
                record = self._owned_occurrence(lease)
                released.append(record is not None)
                if record is None or record.occurrence is None:
                    continue
                record.occurrence.status = _INTERRUPTED
                record.occurrence.retry_at_ms = now
                record.lease_owner = ""
                self._reindex(record)
            return released

    def _owned_lease(self, lease: Lease, now: int) -> Optional[_Record]:
        record = self._owned_occurrence(lease)
        if record is None or record.lease_owner != lease.owner or record.lease_expires_ms <= now:
            return None
        return record

    def _owned_occurrence(self, lease: Lease) -> Optional[_Record]:
        # Owner and fence of the occurrence decide, not the lease: a finish whose lease ran out
        # but that nobody took over yet is still the latest word on that occurrence.
        record = self._records.get(lease.job_name)
        if record is None or record.occurrence is None:
            return None
        occurrence = record.occurrence
        if occurrence.status != _RUNNING:
            return None
        if occurrence.owner != lease.owner or occurrence.fence != lease.fence:
            return None
        return record

    # -- the due index -----------------------------------------------------------------------

    def _reindex(self, record: _Record) -> None:
        due = self._due_time(record)
        if due == record.state.due_ms and due is not None:
            return  # its index entry is still valid
        record.state.due_ms = due
        if due is not None:
            heapq.heappush(self._index, (due, record.state.name))
        if len(self._index) > 2 * len(self._records) + 1024:
            # Stale entries only leave the heap when they reach its top; rebuild it before
            # they outgrow the live ones.
            self._index = [(r.state.due_ms, name) for name, r in self._records.items()
                           if r.state.due_ms is not None]
            heapq.heapify(self._index)

    @staticmethod
    def _due_time(record: _Record) -> Optional[int]:
        state = record.state
        occurrence = record.occurrence
        if state.paused:
            return None
        if occurrence is not None:
            if occurrence.status == _RUNNING:
                return record.lease_expires_ms
            return occurrence.retry_at_ms
        if record.manual_at_ms is not None and state.next_run_ms is not None:
            return min(record.manual_at_ms, state.next_run_ms)
        return record.manual_at_ms if record.manual_at_ms is not None else state.next_run_ms

    def _due_entries(self, now: int, limit: int) -> list[DueEntry]:
        entries: list[DueEntry] = []
        kept: list[tuple[int, str]] = []
        while self._index and len(entries) < limit and self._index[0][0] <= now:
            due, name = heapq.heappop(self._index)
            record = self._records.get(name)
            if record is None or record.state.due_ms != due or any(n == name for _, n in kept):
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
        return DueEntry(record.state.name, record.state.due_ms, record.state.next_run_ms)

    @staticmethod
    def _snapshot(record: _Record) -> JobState:
        state = record.state
        occurrence = record.occurrence
        return JobState(
            state.name, state.next_run_ms, state.due_ms, state.paused, state.fence,
            state.run_count, state.failure_count, state.consecutive_failures, state.last_run_ms,
            state.last_success_ms, state.last_error, state.last_duration,
            "" if occurrence is None else occurrence.status,
            None if occurrence is None else occurrence.scheduled_ms,
            0 if occurrence is None else occurrence.attempt,
            state.last_failed, state.description,
            occurrence.owner if occurrence is not None and occurrence.status == _RUNNING else "")


def _claim_fields(claim: Claim) -> tuple[object, ...]:
    # A frozen dataclass kept per job for the job's lifetime would be promoted to the
    # collector's oldest generation after every claim, making full collections (tens of ms
    # with 10,000 jobs, stalling every thread) several times more frequent.
    return (claim.job_name, claim.owner, claim.fence, claim.scheduled_ms, claim.attempt,
            claim.kind, claim.claimed_at_ms, claim.lease_ms)
