"""The claim and finish rules: what a claim or an outcome does to a job's stored state,
decided once for every backend written in Python.

A backend loads the job's stored fields (a :class:`StoredJob`), asks :func:`decide_claim` or
:func:`decide_finish`, and applies the decision to its store in its own way (the memory
backend mutates its record and re-indexes it; a SQL backend would run one ``UPDATE``). The
rules hold no lock, do no I/O and keep no index; each backend makes its transition atomic.
RedisBackend cannot call them (its transitions run as Lua scripts inside Redis,
``backends/lua/claim.lua`` and ``common.lua``, which implement the same tree);
``tests/backends/test_claim_agreement.py`` drives both through the same scenarios and
compares every stored field.

A claim (:func:`decide_claim`), first match wins:

1. :data:`RESEND`: the latest claim's owner token is the request's: the reply of that claim
   was lost, and the claim is answered again as stored. Nothing changes.
2. :data:`SUPERSEDED`: the job is stored with another definition version (a rolling deploy).
3. :data:`REFUSE`: the job is paused, not due at all, due at another time than the caller
   saw (``expected_due_ms``), or not yet due by the backend's clock.
4. An occurrence in flight (``status`` not ``""``), at its scheduled time, attempt + 1:

   a. waiting for a retry: :class:`Take` as ``retry``;
   b. running under a lease that has not run out: :data:`REFUSE` (held);
   c. orphaned (its lease ran out) or interrupted at shutdown: :data:`ABANDON` once it was
      recovered ``max_recoveries`` times (it settles as failed, with
      :data:`ABANDONED_ERROR`; with a positive ``history_limit`` the request also records
      the abandoned attempt, from the latest claim's fields, as an ``abandoned`` run), else
      :class:`Take` as ``recovery``, recoveries + 1.

5. A pending ``run_now`` not later than the next regular run: :class:`Take` as ``manual`` at
   the time it was asked for, attempt 1; the request is cleared.
6. The next regular run: :data:`REFUSE` unless the caller saw the stored next run and asks
   for an occurrence from it to now whose following one is later. Then the next run becomes
   the following one and: :data:`SKIP` when the occurrence is later than its misfire grace,
   else :class:`Take` as ``regular``, attempt 1.

Every :class:`Take` then bumps the fence to at least ``max(fence + 1, now in µs)``, records
the request's owner token as the occurrence's, the claim time and the lease's length, leases
the occurrence until now + ``lease_ms`` and marks it ``running``.

An outcome (:func:`decide_finish`) counts only if :func:`owns` says its owner token and fence
still own the running occurrence; a stale one changes nothing. The attempt is counted (run
count + 1, last run at its claim time, its duration; a failure's error as the last error),
then:

1. succeeded: :data:`SETTLE_SUCCEEDED`: last success now, no consecutive failures, not
   failed;
2. failed with a retry delay: :data:`RETRY_WAIT` at now + delay (:func:`retry_at_ms`), and
   not before the lease runs out if the handler is still running (``still_running``);
3. failed: :data:`SETTLE_FAILED`: failure count and consecutive failures + 1, the error
   (if any) as the last error, failed.

Settling ends the occurrence: ``status`` ``""``, no retry time, recoveries 0. The latest
claim's fields stay, so that a re-sent claim is still answered. An interrupt (shutdown) marks
the running occurrence ``interrupted``, due at once. :func:`due_time` is where each state
places the job in the due index.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Optional, Protocol, Union

from .base import ClaimRequest, OccurrenceKind, OccurrenceStatus, Outcome, superseded

__all__ = [
    "ABANDON",
    "ABANDONED_ERROR",
    "REFUSE",
    "RESEND",
    "RETRY_WAIT",
    "SETTLE_FAILED",
    "SETTLE_SUCCEEDED",
    "SKIP",
    "SUPERSEDED",
    "ClaimDecision",
    "ClaimVerdict",
    "FinishVerdict",
    "StoredJob",
    "Take",
    "decide_claim",
    "decide_finish",
    "due_time",
    "owns",
    "retry_at_ms",
]

#: The last error of an occurrence abandoned by :data:`ABANDON`.
ABANDONED_ERROR = ("abandoned: its holder stopped before finishing and recovery is "
                   "exhausted or disabled")

_RUNNING = OccurrenceStatus.RUNNING
_RETRY_WAIT = OccurrenceStatus.RETRY_WAIT
_REGULAR = OccurrenceKind.REGULAR
_RETRY = OccurrenceKind.RETRY
_RECOVERY = OccurrenceKind.RECOVERY
_MANUAL = OccurrenceKind.MANUAL


class StoredJob(Protocol):
    """The stored fields the rules read: a job's row, as a backend loaded it.

    The latest claim's fields (``owner``, ``fence``, ``scheduled_ms``, ``attempt``) stay
    after its occurrence settled; the occurrence's (``retry_at_ms``, ``recoveries``,
    ``lease_expires_ms``) mean something only while ``status`` is not ``""``.
    """

    @property
    def version(self) -> str:
        """The definition version last registered (``""``: none)."""

    @property
    def paused(self) -> bool: ...

    @property
    def due_ms(self) -> Optional[int]:
        """Where :func:`due_time` last placed the job (``None``: not in the index)."""

    @property
    def next_run_ms(self) -> Optional[int]:
        """The next regular occurrence (``None``: no more)."""

    @property
    def manual_at_ms(self) -> Optional[int]:
        """When a pending ``run_now`` was asked for (``None``: none pending)."""

    @property
    def owner(self) -> str:
        """The latest claim's owner token (``""``: never claimed)."""

    @property
    def fence(self) -> int: ...

    @property
    def status(self) -> str:
        """The occurrence in flight: an :class:`~.base.OccurrenceStatus`."""

    @property
    def scheduled_ms(self) -> int:
        """The latest claim's scheduled time."""

    @property
    def attempt(self) -> int:
        """The latest claim's attempt (1 for the first)."""

    @property
    def recoveries(self) -> int:
        """How often the occurrence in flight was recovered from a stopped holder."""

    @property
    def lease_expires_ms(self) -> int:
        """When the running attempt's lease runs out."""

    @property
    def retry_at_ms(self) -> Optional[int]:
        """When an occurrence waiting (a retry, an interruption) is due."""


class ClaimVerdict(Enum):
    """A claim that takes nothing (see the module's tree)."""

    RESEND = "resend"  #: answer the latest claim again, as stored
    SUPERSEDED = "superseded"  #: refuse: the job is stored with another definition version
    REFUSE = "refuse"  #: refuse: paused, not due, not as the caller saw it, or held
    SKIP = "skip"  #: the next run becomes the request's ``following_ms``; report it skipped
    #: settle as failed with ABANDONED_ERROR; report it abandoned (and record it in the run
    #: history if the request asks)
    ABANDON = "abandon"


RESEND = ClaimVerdict.RESEND
SUPERSEDED = ClaimVerdict.SUPERSEDED
REFUSE = ClaimVerdict.REFUSE
SKIP = ClaimVerdict.SKIP
ABANDON = ClaimVerdict.ABANDON


class Take(NamedTuple):
    """A claim that takes an occurrence: the claim's fields, and what the job's fields
    become (besides the fence, owner and lease, which every take sets alike)."""

    kind: str  #: an :class:`~.base.OccurrenceKind`
    scheduled_ms: int
    attempt: int
    next_run_ms: Optional[int]
    manual_at_ms: Optional[int]
    recoveries: int


ClaimDecision = Union[ClaimVerdict, Take]


def decide_claim(job: StoredJob, request: ClaimRequest, now_ms: int) -> ClaimDecision:
    """What ``request`` does to the stored ``job`` at ``now_ms`` (the module's tree)."""
    if request.owner == job.owner != "":
        return RESEND
    if superseded(job.version, request.definition_version):
        return SUPERSEDED
    due = job.due_ms
    if job.paused or due is None or due != request.expected_due_ms or due > now_ms:
        return REFUSE
    status = job.status
    if status:
        if status == _RETRY_WAIT:
            return Take(_RETRY, job.scheduled_ms, job.attempt + 1, job.next_run_ms,
                        job.manual_at_ms, job.recoveries)
        if status == _RUNNING and job.lease_expires_ms > now_ms:
            return REFUSE
        if job.recoveries >= request.max_recoveries:
            return ABANDON
        return Take(_RECOVERY, job.scheduled_ms, job.attempt + 1, job.next_run_ms,
                    job.manual_at_ms, job.recoveries + 1)
    manual, next_run = job.manual_at_ms, job.next_run_ms
    if manual is not None and (next_run is None or manual <= next_run):
        return Take(_MANUAL, manual, 1, next_run, None, 0)
    scheduled, following = request.scheduled_ms, request.following_ms
    if (
        next_run is None
        or request.expected_next_run_ms != next_run
        or scheduled is None
        or scheduled < next_run
        or scheduled > now_ms
        or (following is not None and following <= scheduled)
    ):
        return REFUSE
    grace = request.misfire_grace_ms
    if grace is not None and now_ms - scheduled > grace:
        return SKIP
    return Take(_REGULAR, scheduled, 1, following, manual, 0)


def owns(job: StoredJob, owner: str, fence: int) -> bool:
    """Whether ``owner`` and ``fence`` still own the job's running occurrence.

    The lease does not decide: a finish whose lease ran out but that nobody took over yet is
    still the latest word on that occurrence.
    """
    return job.status == _RUNNING and job.owner == owner and job.fence == fence


class FinishVerdict(Enum):
    """What an owning outcome does to its occurrence (see the module's rules)."""

    SETTLE_SUCCEEDED = "succeeded"  #: settle as succeeded
    SETTLE_FAILED = "failed"  #: settle as failed, the outcome's error (if any) the last
    RETRY_WAIT = "retry_wait"  #: wait for a retry, due at :func:`retry_at_ms`


SETTLE_SUCCEEDED = FinishVerdict.SETTLE_SUCCEEDED
SETTLE_FAILED = FinishVerdict.SETTLE_FAILED
RETRY_WAIT = FinishVerdict.RETRY_WAIT


def decide_finish(outcome: Outcome) -> FinishVerdict:
    """What an owning ``outcome`` (see :func:`owns`) does to its occurrence."""
    if outcome.succeeded:
        return SETTLE_SUCCEEDED
    return SETTLE_FAILED if outcome.retry_delay_ms is None else RETRY_WAIT


def retry_at_ms(job: StoredJob, outcome: Outcome, now_ms: int) -> int:
    """When the retry that ``outcome`` asks for (:data:`RETRY_WAIT`) is due."""
    retry_at = now_ms + max(0, outcome.retry_delay_ms or 0)
    if outcome.still_running:
        # Nobody refreshes that lease any more; the retry must not overlap the handler.
        retry_at = max(retry_at, job.lease_expires_ms)
    return retry_at


def due_time(job: StoredJob) -> Optional[int]:
    """The job's place in the due index (``None``: not in it), as the contract defines it
    (:mod:`.base`); ``due_ms`` is what the backend stored from it."""
    if job.paused:
        return None
    status = job.status
    if status:
        return job.lease_expires_ms if status == _RUNNING else job.retry_at_ms
    manual, next_run = job.manual_at_ms, job.next_run_ms
    if manual is not None and next_run is not None:
        return min(manual, next_run)
    return next_run if manual is None else manual
