"""The backend contract: what a store shared by many schedulers must do, documented once.

A backend keeps, per job, plain data (JSON-serialisable values only, never pickles or code):
the job's definition, its next regular run time, whether it is paused, the occurrence in
flight (scheduled time, attempt, owner token, fence, status), its counters, and a lease with
a time-to-live. All times are integer epoch milliseconds, decided by the backend's own clock
(Redis ``TIME`` for Redis), never by the calling instance's wall clock.

Every state change is one atomic transition:

- :meth:`Backend.claim` compares the *occurrence* (the stored due time the caller saw), checks
  due-ness, bumps the job's fencing counter, takes the lease, advances the next run time to the
  following occurrence (computed by the caller from its schedule) and records the occurrence as
  running. Many claims travel in one call so a tick costs one round trip.
- :meth:`Backend.refresh` resets the TTL of leases still owned by their token; it never adds
  to a TTL and never re-creates a missing lease.
- :meth:`Backend.finish` records an attempt's outcome if its token and fence still own the
  occurrence, then schedules the retry (any instance may run it) or settles the occurrence.
- :meth:`Backend.interrupt` gives up running occurrences at shutdown so another instance
  recovers them at once rather than after the lease runs out.

- :meth:`Backend.finish_and_claim` does both in one call (one round trip where the backend
  can): a worker that just finished a run records it and claims its next occurrence.

A job's *due time* is derived from its state and kept in a sorted index so that finding due
work is cheap with 100,000 jobs:

- paused, or no occurrence left: not in the index;
- an attempt running: when its lease expires (an orphan is then recovered as attempt + 1);
- waiting for a retry: ``retry_at``; interrupted at shutdown: the interruption time;
- otherwise: the earlier of the next regular run and a pending ``run_now`` request.

*Definitions change in rolling deploys*, when old and new instances coexist: the group runs a
job as it was last registered. Registering a new version replaces the stored definition (and
restarts the regular occurrences from the new schedule when the schedule changed); a claim
made with another version is refused as ``superseded``, so an instance still on the old
definition never claims the job, and does not write its schedule back.

This is not a queue: a job has at most one occurrence in flight, and its next regular run is
considered only after that occurrence settled (missed runs are then coalesced or skipped).

*Live instances* are kept beside the jobs, one record per started scheduler
(:class:`InstanceInfo`): :meth:`Backend.heartbeat` writes it to expire a TTL from the
backend's now, :meth:`Backend.leave` removes it at a graceful stop, and a crashed instance's
record simply expires. These methods are optional: their defaults raise
``NotImplementedError``, and a scheduler on such a backend runs its jobs all the same.

*Run history* is optional too: an :class:`Outcome` with a positive ``history_limit`` makes
:meth:`Backend.finish` record the attempt as a :class:`RunRecord` in the same transition,
keeping the job's newest ``history_limit`` records and the group's newest
:data:`GROUP_HISTORY_LIMIT`. A :class:`ClaimRequest` with a positive ``history_limit`` does
the same for the attempt its claim *abandons* (its holder stopped mid-run and its recovery is
exhausted or disabled), which no outcome will ever report: it is recorded as ``abandoned``.
:meth:`Backend.history` reads them back, and removing a job drops its records. A backend
without history ignores ``history_limit`` and its :meth:`Backend.history` raises
``NotImplementedError`` (the default).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, Sequence

from .._time import from_ms, iso

__all__ = [
    "Backend",
    "Claim",
    "ClaimBatch",
    "ClaimRequest",
    "DueEntry",
    "GROUP_HISTORY_LIMIT",
    "HISTORY_ERROR_BYTES",
    "InstanceInfo",
    "JobDefinition",
    "JobState",
    "Lease",
    "Outcome",
    "OccurrenceKind",
    "OccurrenceStatus",
    "RunOutcome",
    "RunRecord",
    "definition_version",
    "encodable",
    "missing_methods",
    "run_outcome",
    "schedule_changed",
    "superseded",
    "truncated_error",
]


class OccurrenceStatus:
    """Where the occurrence in flight is (plain strings, stored as such);
    :attr:`JobState.occurrence_status` is one of these."""

    NONE = ""  #: nothing in flight: the job waits for its next due time
    RUNNING = "running"  #: claimed; its holder runs it under a lease
    RETRY_WAIT = "retry_wait"  #: an attempt failed; any instance runs the retry at retry_at
    INTERRUPTED = "interrupted"  #: handed back at shutdown; any instance recovers it at once


class OccurrenceKind:
    """How an occurrence came to be claimed (plain strings, stored as such)."""

    REGULAR = "regular"  #: the schedule's next run
    RETRY = "retry"  #: another attempt after a failure, per the retry policy
    RECOVERY = "recovery"  #: another attempt after the holder died or shut down mid-run
    MANUAL = "manual"  #: an extra run asked for with ``run_now``


class RunOutcome:
    """How a finished attempt ended, as its :class:`RunRecord` says (plain strings, stored
    as such)."""

    SUCCEEDED = "succeeded"  #: its handler returned
    FAILED = "failed"  #: its handler raised (a retry may follow, as another attempt)
    TIMED_OUT = "timed_out"  #: it ran past its timeout
    #: its holder stopped mid-run (a crash, or a shutdown that handed it back) and its
    #: recovery is exhausted or disabled, so a claim settled it as failed
    ABANDONED = "abandoned"


#: The error text a :class:`RunRecord` keeps, at most, in UTF-8 bytes (cut at a character
#: boundary): a traceback-sized message must not make every record of a job that large.
HISTORY_ERROR_BYTES = 2_000

#: The records of the group's recent runs, across jobs, that a backend keeps at most.
GROUP_HISTORY_LIMIT = 1_000


@dataclass(frozen=True)
class JobDefinition:
    """What an instance registers: the job's name and plain-data description.

    :param name: the job's unique name in the scheduler group.
    :param first_run_ms: the first regular occurrence, used only if the job is new to the
        backend (an existing job keeps its stored state); ``None`` for no occurrence.
    :param description: JSON-able description (schedule, options, schema version) for
        operators; the backend stores it and never interprets it.
    :param version: the definition's fingerprint (:func:`definition_version`); ``""`` for
        none. The group runs a job as it was last registered: registering another version
        replaces the stored one (and, when the schedule part differs, restarts the job's
        regular occurrences at ``first_run_ms``, unless it has none left: a one-time job
        that ran stays done), and claims made with the old version are refused from then on
        (see :attr:`ClaimRequest.definition_version`).
    """

    name: str
    first_run_ms: Optional[int]
    description: dict[str, object] = field(default_factory=dict)
    #: a new job starts paused (``Job(enabled=False)``); an existing one keeps its state
    start_paused: bool = False
    version: str = ""


def definition_version(description: Mapping[str, object]) -> str:
    """A job definition's fingerprint: ``<schedule part>.<the rest>``, two short hashes of
    the description's canonical JSON, so that a backend can tell a changed schedule from a
    changed option without interpreting either."""
    schedule = {key: value for key, value in description.items() if key == "schedule"}
    rest = {key: value for key, value in description.items() if key != "schedule"}
    return f"{_digest(schedule)}.{_digest(rest)}"


def schedule_changed(stored: str, registered: str) -> bool:
    """Whether two definition versions differ in their schedule part."""
    return stored.partition(".")[0] != registered.partition(".")[0]


def superseded(stored: str, claimed: str) -> bool:
    """Whether a claim made with version ``claimed`` is refused for a job stored with
    ``stored`` (``""`` on either side: no version to compare)."""
    return bool(stored) and bool(claimed) and stored != claimed


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()


@dataclass(frozen=True)
class JobState:
    """A snapshot of one job's stored state."""

    name: str
    next_run_ms: Optional[int]
    due_ms: Optional[int]
    paused: bool
    fence: int
    run_count: int = 0
    failure_count: int = 0
    consecutive_failures: int = 0
    last_run_ms: Optional[int] = None
    last_success_ms: Optional[int] = None
    last_error: str = ""
    last_duration: Optional[float] = None
    #: an :class:`OccurrenceStatus`: ``running``, ``retry_wait``, ``interrupted`` or ``""``
    occurrence_status: str = OccurrenceStatus.NONE
    occurrence_scheduled_ms: Optional[int] = None
    occurrence_attempt: int = 0
    #: whether the last settled occurrence failed (after its retries)
    last_failed: bool = False
    description: dict[str, object] = field(default_factory=dict)
    #: the owner token of the attempt running now (``occurrence_status`` ``running``), else
    #: ``""``; a scheduler's tokens start with its instance id (see
    #: :func:`pyscheduler.identity.instance_of`)
    owner: str = ""


@dataclass(frozen=True)
class DueEntry:
    """A job whose due time has come, as the backend's index sees it."""

    name: str
    due_ms: Optional[int]
    next_run_ms: Optional[int]
    #: the backend does not know the job: removed by an operator (``removed``) or lost with
    #: the backend's data (``missing`` only), in which case its registrants re-create it
    missing: bool = False
    removed: bool = False
    #: the job is stored with another definition version than the claim's: an instance
    #: registered it since (a rolling deploy). The caller leaves it to the instances that
    #: have that definition, and asks again later in case it is registered back.
    superseded: bool = False


@dataclass(frozen=True)
class ClaimRequest:
    """One occurrence an instance wants to claim.

    :param job_name: the job.
    :param owner: a nonce the caller made for this claim; it becomes the lease's owner token.
        Re-sending the same request (a lost reply) returns the original claim.
    :param expected_due_ms: the stored due time the caller saw: the compare-and-set value.
    :param expected_next_run_ms: the stored next regular run the caller saw.
    :param scheduled_ms: for a regular occurrence, the nominal time to run: the latest
        occurrence not after now (missed ones coalesce into it).
    :param following_ms: the regular occurrence after ``scheduled_ms``; ``None``: no more.
    :param misfire_grace_ms: a regular occurrence later than this is skipped; ``None``: no limit.
    :param max_recoveries: how often an orphaned occurrence may be re-claimed (0: never).
    :param history_limit: as :attr:`Outcome.history_limit`, for the attempt this claim
        abandons, if it does (see :meth:`Backend.claim`): record it in the run history,
        keeping that many records of the job at most; ``0``: no record.
    """

    job_name: str
    owner: str
    expected_due_ms: int
    expected_next_run_ms: Optional[int]
    scheduled_ms: Optional[int]
    following_ms: Optional[int]
    misfire_grace_ms: Optional[int] = None
    max_recoveries: int = 1
    #: the caller's :attr:`JobDefinition.version` of the job; ``""`` claims whatever version
    #: is stored
    definition_version: str = ""
    history_limit: int = 0


@dataclass(frozen=True)
class Claim:
    """A claimed occurrence: the caller now holds its lease and must run it."""

    job_name: str
    owner: str
    fence: int
    scheduled_ms: int
    attempt: int
    kind: str
    claimed_at_ms: int
    lease_ms: int


@dataclass(frozen=True)
class ClaimBatch:
    """The answer to :meth:`Backend.claim`.

    :param claims: the occurrences now held by the caller.
    :param refused: the current state of each requested job that was not claimed (someone
        else claimed it, it is paused, removed or not yet due); ``due_ms`` is ``None`` for a
        paused, finished or unknown job.
    :param due: other jobs due by the backend's clock that the caller did not ask for (retries
        or ``run_now`` requests made elsewhere, orphans), at most ``peek`` of them.
    :param skipped: names of jobs whose occurrence was skipped as misfired.
    :param abandoned: names of jobs whose orphaned occurrence ran out of recoveries.
    :param now_ms: the backend's clock when the batch was decided.
    :param members_epoch: a number that changes whenever an instance joins the group's live
        instances or leaves them (see :meth:`Backend.heartbeat`), so that every instance
        notices at its next claim and heartbeats at once to learn the new list; ``0`` from
        a backend that does not keep live instances.
    :param removals_epoch: a number that changes whenever a job is removed, or found gone by
        a peek (its state lost or reset), so that the instances that do not watch it (its
        owner does) notice and drop or re-create it too.
    """

    claims: list[Claim]
    refused: list[DueEntry]
    due: list[DueEntry]
    skipped: list[str]
    abandoned: list[str]
    now_ms: int
    members_epoch: int = 0
    removals_epoch: int = 0


@dataclass(frozen=True)
class Lease:
    """The owner's handle on a running occurrence: enough to refresh, finish or release it."""

    job_name: str
    owner: str
    fence: int


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt, reported by its owner.

    :param retry_delay_ms: when set, the occurrence is retried that long after the backend
        recorded the failure (by whichever instance claims it first).
    :param still_running: the attempt was settled while its handler goes on (it ignored the
        cancellation at its timeout): its retry then waits for the lease to run out too, so
        that it never overlaps the handler (whose lease nobody refreshes any more).
    :param timed_out: the attempt failed by running past its timeout.
    :param history_limit: record the attempt in the run history, keeping that many records
        of the job at most; ``0``: no record. It travels with each outcome (rather than
        being a setting of the backend) so that the finish that records the result writes
        its record in the same transition.
    """

    lease: Lease
    succeeded: bool
    error: str = ""
    duration: float = 0.0
    retry_delay_ms: Optional[int] = None
    still_running: bool = False
    timed_out: bool = False
    history_limit: int = 0


def run_outcome(outcome: Outcome) -> str:
    """The :class:`RunOutcome` of ``outcome``'s attempt."""
    if outcome.succeeded:
        return RunOutcome.SUCCEEDED
    return RunOutcome.TIMED_OUT if outcome.timed_out else RunOutcome.FAILED


def encodable(text: str) -> str:
    """``text`` made encodable as UTF-8, as every backend stores error texts: an exception's
    message may hold a lone surrogate, which becomes its escape (``\\ud800``)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def truncated_error(text: str) -> str:
    """``text`` cut to :data:`HISTORY_ERROR_BYTES` of UTF-8, at a character boundary."""
    if len(text) <= HISTORY_ERROR_BYTES // 6:  # short, whatever it holds (a surrogate: 6)
        return text
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= HISTORY_ERROR_BYTES:
        return text
    return data[:HISTORY_ERROR_BYTES].decode("utf-8", "ignore")


@dataclass(frozen=True)
class RunRecord:
    """One finished attempt, as the run history keeps it (plain data; what a backend reads
    back is checked field by field, and a record not of our form is skipped).

    :param job: the job's name.
    :param scheduled_ms: the occurrence's scheduled time (epoch ms).
    :param attempt: the attempt's number (1 for the first).
    :param kind: an :class:`OccurrenceKind`: how the occurrence was claimed.
    :param owner: the attempt's owner token (its lease's), which names its instance.
    :param fence: the attempt's fencing token.
    :param started_ms: when it was claimed, on the backend's clock (epoch ms).
    :param duration: how long its handler ran, in seconds (``0.0`` for an abandoned
        attempt, whose holder never said).
    :param outcome: a :class:`RunOutcome`.
    :param error: the error text, cut to :data:`HISTORY_ERROR_BYTES`; ``""`` for none.
    """

    job: str
    scheduled_ms: int
    attempt: int
    kind: str
    owner: str
    fence: int
    started_ms: int
    duration: float
    outcome: str
    error: str = ""


@dataclass(frozen=True)
class InstanceInfo:
    """One started scheduler of the group, as its last heartbeat recorded it.

    Plain data, stored as JSON; what a backend reads back is checked field by field, since
    anything may have written it.

    :param instance_id: the scheduler's ``instance_id`` (one record per id).
    :param host: the host name it runs on.
    :param pid: its process id on that host.
    :param started_at_ms: when it started, on the backend's clock (epoch ms).
    :param library_version: the pyscheduler version it runs.
    :param max_concurrent: its worker slots.
    :param running: the names of the jobs whose handlers run there, as of that heartbeat
        (sorted, each once).
    :param last_heartbeat_ms: when the backend recorded that heartbeat, on its own clock;
        ``0`` in what an instance sends (the backend sets it).
    :param jobs_digest: a fingerprint of the jobs it has registered, with their definition
        versions: the instances with the same one divide those jobs among themselves
        (:mod:`pyscheduler.ownership`); ``""`` when unknown.
    """

    instance_id: str
    host: str
    pid: int
    started_at_ms: int
    library_version: str
    max_concurrent: int
    running: tuple[str, ...] = ()
    last_heartbeat_ms: int = 0
    jobs_digest: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the fields by name, times (``started_at``, ``last_heartbeat_at``) as
        UTC ISO 8601 to the millisecond, ``running`` as a list."""
        return {
            "instance_id": self.instance_id, "host": self.host, "pid": self.pid,
            "started_at": iso(from_ms(self.started_at_ms)),
            "last_heartbeat_at": iso(from_ms(self.last_heartbeat_ms))
            if self.last_heartbeat_ms else None,
            "library_version": self.library_version, "max_concurrent": self.max_concurrent,
            "running": list(self.running),
        }


class Backend(Protocol):
    """The store shared by every scheduler of a group. Implementations are thread-safe."""

    def open(self) -> None:
        """Connect (or check the connection) before use; called by ``Scheduler.start``.

        :raises BackendUnavailableError: the store cannot be reached.
        """

    def close(self) -> None:
        """Release what :meth:`open` acquired; closes only connections the backend built."""

    def now_ms(self) -> int:
        """The backend's clock, in epoch milliseconds."""

    def register(self, definitions: Sequence[JobDefinition]) -> list[JobState]:
        """Create the jobs not yet stored; leave existing state as it is (a paused job stays
        paused, its counters and next run time are kept) but update the description. An
        explicit registration clears a removal tombstone.

        :returns: the stored state of each job, in the order given.
        """

    def claim(
        self, instance_id: str, requests: Sequence[ClaimRequest], lease_ms: int, peek: int
    ) -> ClaimBatch:
        """Atomically claim each due occurrence in ``requests``, each on its own.

        A request is claimed only if the job exists, is not paused, its stored due time equals
        ``expected_due_ms`` and that time has come by the backend's clock. What is claimed
        depends on the stored state: a retry or an orphan recovery (same scheduled time,
        attempt + 1), a pending ``run_now``, or else the next regular occurrence, which is
        skipped instead when later than its misfire grace. Each claim bumps the fence to
        ``max(fence + 1, now in microseconds)`` so fences grow even across a data loss.

        An orphaned or interrupted occurrence recovered ``max_recoveries`` times already is
        *abandoned* instead: it settles as failed (the failure counters grow, not the run
        count) and is listed in :attr:`ClaimBatch.abandoned`. Its request with a positive
        ``history_limit`` also records the abandoned attempt in the run history, in the same
        transition and trimmed as :meth:`finish` trims: a :class:`RunRecord` of that
        attempt's stored claim (its scheduled time, attempt, kind, owner, fence, and its
        claim time as ``started_ms``), ``duration`` ``0.0``, outcome
        :attr:`RunOutcome.ABANDONED` and the abandonment's error text
        (:data:`~.claim_rules.ABANDONED_ERROR`, cut as any error is).

        :param peek: report up to this many other due jobs in :attr:`ClaimBatch.due`.
        """

    def refresh(self, leases: Sequence[Lease], lease_ms: int) -> list[bool]:
        """Set each lease still owned by its token and fence to expire ``lease_ms`` from now.

        :returns: per lease, whether it is still held. A lost lease is never re-created.
        """

    def finish(self, outcomes: Sequence[Outcome]) -> list[Optional[JobState]]:
        """Record each outcome if its token and fence still own the occurrence.

        A stale outcome (the occurrence was taken over, or the job removed) changes nothing.

        An accepted outcome with a positive ``history_limit`` is also recorded in the run
        history (see :meth:`history`), in the same transition, and the job's records are
        trimmed to that many, the group's to :data:`GROUP_HISTORY_LIMIT`.

        :returns: per outcome, the job's new state if accepted (its ``description`` may be
            left empty: finishing never changes it), ``None`` if stale.
        """

    def finish_and_claim(
        self, outcomes: Sequence[Outcome], instance_id: str, requests: Sequence[ClaimRequest],
        lease_ms: int, peek: int,
    ) -> tuple[list[Optional[JobState]], ClaimBatch]:
        """:meth:`finish` then :meth:`claim`: what a worker that just finished a run does to
        record it and claim its next occurrence. This default makes two calls; a backend
        that can do both in one round trip overrides it (subclass :class:`Backend` to
        inherit the default)."""
        return (self.finish(outcomes),
                self.claim(instance_id, requests, lease_ms, peek))

    def interrupt(self, leases: Sequence[Lease]) -> list[bool]:
        """Give up owned running occurrences so another instance recovers them at once."""

    def pause(self, name: str) -> DueEntry:
        """Take the job out of the due index.

        :returns: its due entry; for a job the backend does not know, a ``missing`` one,
            ``removed`` when a tombstone says it was removed (the same for :meth:`resume` and
            :meth:`run_now`).
        """

    def resume(self, name: str) -> DueEntry:
        """Put a paused job back in the due index."""

    def remove(self, name: str) -> bool:
        """Drop the job and all its state (its run history too), leaving a tombstone so
        that the other instances drop it too instead of re-creating it; ``False`` if
        unknown."""

    def run_now(self, name: str) -> DueEntry:
        """Ask for an extra occurrence now, claimed through the usual lease (after the
        occurrence in flight, if any)."""

    def get_states(self, names: Sequence[str]) -> list[Optional[JobState]]:
        """The stored state of each named job, ``None`` where unknown."""

    def job_names(self) -> list[str]:
        """Every job stored in this scheduler group, registered by any instance."""

    def heartbeat(self, info: InstanceInfo, ttl_ms: int) -> list[InstanceInfo]:
        """Record ``info`` as live until ``ttl_ms`` from the backend's now (replacing this
        instance's previous record, with ``last_heartbeat_ms`` set to now), and drop the
        records that expired. One call, however many jobs or instances there are.

        A record is live while its expiry is after the backend's now; a record read back that
        is not of our form is skipped (and logged), never fatal. The lease refresher's thread
        makes this call: it must fail fast rather than hang (as :meth:`refresh` must).

        :returns: the live instances, this one included, sorted by ``instance_id``.
        :raises NotImplementedError: the backend does not keep live instances (the default);
            the scheduler then says so once and carries on without them.
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep live instances")

    def instances(self) -> list[InstanceInfo]:
        """The live instances, sorted by ``instance_id``; reads only (expired records are
        left for the next :meth:`heartbeat` to drop, but never returned).

        :raises NotImplementedError: as for :meth:`heartbeat`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep live instances")

    def leave(self, instance_id: str) -> None:
        """Remove the instance's record (a graceful stop); nothing if there is none.

        :raises NotImplementedError: as for :meth:`heartbeat`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep live instances")

    def history(self, name: Optional[str], limit: int) -> list[RunRecord]:
        """The run history, newest first: the job's last ``limit`` records (``[]`` for a job
        without any, known or not), or with ``name`` ``None`` the group's, across jobs.
        Reads only; a stored record not of our form is skipped (and logged), never fatal.

        :raises NotImplementedError: the backend keeps no history (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no run history")


#: Optional: without them, live instances (the scheduler says so at start) or the run
#: history are unavailable.
OPTIONAL_METHODS = frozenset({"heartbeat", "instances", "leave", "history"})


def missing_methods(backend: object) -> list[str]:
    """The required methods of the contract that ``backend`` lacks.

    A backend is structural (a Protocol): one written before a method joined the contract
    (``finish_and_claim``) would otherwise fail at its first use rather than up front.
    """
    required = [name for name, value in vars(Backend).items()
                if callable(value) and not name.startswith("_") and name not in OPTIONAL_METHODS]
    return [name for name in required if not callable(getattr(backend, name, None))]
