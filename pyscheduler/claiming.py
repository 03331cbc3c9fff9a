"""Claimer: who claims which due occurrence when, and what happens to its result.

An instance keeps a local index of its jobs' due times (:class:`~pyscheduler.due_index.
DueIndex`), learnt from the backend's answers, so that one call asks the backend for a whole
batch of due occurrences. Who claims, and when:

- **The tick thread** wakes at the earliest due time in the index (or a timeout, or at the
  latest every ``tick_interval``), settles timed-out runs, and claims what is due for the
  free worker slots (:meth:`Claimer.step`).
- **A worker that just finished a run** claims for the free slots itself, in the same backend
  call that records its result (:meth:`Claimer.claim_for_free_worker`): under load a burst
  flows through the pool without waking the tick, a hand-off that costs more than the rest
  of a run. It wakes the tick when the tick should wake sooner than it planned.
- **One at a time.** Both go through :meth:`Claimer.claim_for_free_slots` under one
  non-blocking lock, so that together they never claim more than the free slots; whoever
  finds a claim under way leaves a note (``_claim_wanted``) and goes on, and the claimer
  looks again before it lets go, counting the slots freed meanwhile.
- **Who asks first.** Each job has an owner among the live instances (:mod:`~pyscheduler.
  ownership`, learnt from the heartbeat): only the owner indexes its due times, so an
  occurrence costs one claim whatever the size of the group. The others keep it parked; the
  tick follows a change of owners first thing in its pass (:class:`~pyscheduler.ownership.
  Owners`).
- **What nobody here knew.** A claim with slots to spare also *peeks*: the backend reports
  other due work (retries and ``run_now`` requests made elsewhere, orphans to recover). What
  this instance owns, or what is ``takeover_delay`` overdue (its owner crashed, is busy or
  lacks the job), enters the index and is claimed next (``Owners.may_take``); the rest is
  left to its owner. At least one call per ``tick_interval`` peeks, and per
  ``takeover_delay`` when the group has other live instances.

Every answer reconciles the index: a claimed occurrence starts (:meth:`Claimer._start_claim`),
a refusal tells the job's current due time, a job the backend lost is re-created from this
instance's registration without re-running what it saw run (:meth:`Claimer.rebuild`), a job
removed elsewhere is dropped, and one registered since with another definition is left to
the instances that have it. Outcomes wait in an :class:`~pyscheduler.outcomes.OutcomeQueue`
and travel with the next claim, or alone when no claim comes.
"""

from __future__ import annotations

import itertools
import math
import threading
import traceback
from datetime import datetime
from typing import Optional

from ._time import from_ms, to_ms
from .backends.base import (
    Backend,
    Claim,
    ClaimBatch,
    ClaimRequest,
    DueEntry,
    JobState,
    OccurrenceStatus,
)
from .clock import Clock
from .config import SchedulerConfig
from .context import JobContext
from .due_index import DueIndex, IndexEntry
from .executor import DefaultJobExecutor, Run
from .lock import DistributedLock
from .management import rebuilt_definition
from .observability import SafeHooks
from .outcomes import OutcomeQueue, decide_outcome
from .ownership import Owners
from .schedules import latest_due_ms

__all__ = ["Claimer"]

_NO_OWNERS: frozenset[str] = frozenset()  # of re-sent requests, when none is


class Claimer:
    """The claim path of one scheduler: its local index, the tick's step and loop, the
    workers' own claims, and the recording of results (see the module docstring)."""

    def __init__(self, backend: Backend, lock: DistributedLock, executor: DefaultJobExecutor,
                 index: DueIndex, config: SchedulerConfig, clock: Clock,
                 hooks: SafeHooks) -> None:
        self.backend, self.lock, self.executor = backend, lock, executor
        self.config, self.clock, self._hooks = config, clock, hooks
        self._index = index
        self.instance_id = ""
        self._owner_prefix = ""
        self._claim_numbers = itertools.count(1)
        self._claim_lock = threading.Lock()
        self._claim_wanted = False
        #: set once started in the background: workers then claim for themselves
        self.workers_claim = False
        self.tick_wakes_at = math.inf  # monotonic; when the sleeping tick wakes by itself
        self.stopping = False
        self.wake = threading.Event()  # wakes the tick thread
        self._offset_ms = 0  # backend clock minus ours, learnt from every claim answer
        self._last_poll = float("-inf")
        #: the requests of the last claim call, if it failed (see _take_unanswered)
        self._unanswered: list[ClaimRequest] = []
        self._unanswered_sent = math.inf
        self.outcomes = OutcomeQueue(self.lock.finish, self._after_finish)
        self.failures = 0  # consecutive failed ticks
        self.owners = Owners(index, backend, config.takeover_seconds, hooks, self.wake)
        # The owners' hashing and pinned jobs, read on every answer without a call.
        self.ownership, self._pinned = self.owners.ownership, self.owners.pinned

    def set_identity(self, instance_id: str, owner_prefix: str) -> None:
        """Owner tokens are ``<owner_prefix><n>``: unique per claim, and per start."""
        self.instance_id, self._owner_prefix = instance_id, owner_prefix
        self._claim_numbers = itertools.count(1)
        self.owners.reset(instance_id)

    def wait_for_claims(self) -> None:
        """Return once no claim is under way (its runs are then submitted)."""
        with self._claim_lock:
            pass

    # -- the tick ----------------------------------------------------------------------------

    def step(self) -> float:
        """One pass of the tick: follow a change of the live instances, settle timed-out runs,
        record waiting results, claim for the free slots. :returns: seconds until the next
        pass is needed."""
        for entry, state in self.owners.follow_members():
            self.apply_state(entry, state)
        stale = self.owners.follow_removals()
        if stale:  # asked at once: each answer says removed (dropped) or lost (re-created)
            now_ms = self._backend_now_ms()
            for entry in stale:
                self._set_due(entry, now_ms, entry.next_run_ms, armed=True)
        for run in self.executor.expire_overdue(self.clock.monotonic()):
            self._settle_timeout(run)
        self.outcomes.flush()
        if not self.claim_for_free_slots():
            # A worker is claiming; it wakes this thread if it leaves anything to do sooner.
            return self.config.tick_seconds
        return self.next_delay()

    def tick_loop(self) -> None:
        """The tick thread: :meth:`step` until stopped, sleeping as long as it says (woken
        early by registrations, management calls and workers), backing off while it fails."""
        while not self.stopping:
            # Until this pass has decided how long to sleep, a worker must wake it for
            # anything: the pass may have looked before that worker's run changed things.
            self.tick_wakes_at = math.inf
            self.wake.clear()
            try:
                delay = self.step()
                self.failures = 0
            except Exception:
                self.failures += 1
                delay = min(self.config.tick_seconds, 0.05 * 2 ** min(self.failures, 8))
                self._hooks.log("error", "tick failed; backing off", seconds=round(delay, 3),
                                traceback=traceback.format_exc(limit=5))
            if self.stopping:
                break
            if delay > 0:
                self.tick_wakes_at = self.clock.monotonic() + delay
                self.clock.wait(self.wake, delay)

    def claim_for_free_slots(self) -> bool:
        """Claim due occurrences for the free worker slots.

        The tick and the workers that just finished a run (see :meth:`claim_for_free_worker`)
        both claim, one at a time so that together they never claim more than the free
        slots. Whoever finds a claim under way leaves a note and goes on, and the claimer
        looks again, counting the slots freed meanwhile: waiting for the lock instead would
        queue every worker behind it.

        :returns: whether this thread claimed; ``False`` if it left the claim to another.
        """
        self._claim_wanted = True
        claimed = False
        while self._claim_wanted:
            if not self._claim_lock.acquire(blocking=False):
                return claimed
            try:
                claimed = True
                self._claim_wanted = False
                free = self.executor.free_slots()
                if free > 0 and not self.stopping:
                    self._claim_and_start(free)
            finally:
                self._claim_lock.release()
        self.outcomes.flush()  # results queued meanwhile that no claim took along
        return claimed

    def claim_for_free_worker(self) -> None:
        """On a worker that just finished a run: claim what is due for the free slots.

        Under load this starts the next occurrence without waking the tick thread, a hand-off
        that costs more than the rest of a run. The tick still wakes at every due time and
        claims what the workers did not; the worker that claimed wakes it when it should wake
        sooner than planned (it went to sleep with every worker busy, or a run with an
        earlier timeout started since).
        """
        if self.stopping or self.failures:
            # While the backend fails the tick alone claims (and backs off); this run's
            # result is recorded now if it can be, else by the tick or stop().
            try:
                self.outcomes.flush()
            except Exception:
                pass  # kept queued; the tick's failures are what gets logged
            return
        try:
            if not self.claim_for_free_slots():
                return  # the claimer does the rest
            wake = self.clock.monotonic() + self.next_delay() < self.tick_wakes_at
        except Exception:
            self._hooks.log("error", "claiming for a free worker failed; the tick retries",
                            traceback=traceback.format_exc(limit=5))
            wake = True
        if wake:
            self.wake.set()

    def _claim_and_start(self, free: int) -> None:
        now_ms = self._backend_now_ms()
        resent_owners, resent_sent = _NO_OWNERS, math.inf
        if self._unanswered:  # the last claim call failed: its requests go first, as they were
            resent, resent_sent = self._take_unanswered(free)
            resent_owners = frozenset(request.owner for request in resent)
            requests = resent + self._due_requests(now_ms, free - len(resent))
        else:
            requests = self._due_requests(now_ms, free)
        now = self.clock.monotonic()
        if not requests and now - self._last_poll < self._poll_seconds():
            return  # nothing due here, and the backend was asked recently
        self._last_poll = now
        # Results waiting to be recorded go along: one backend call records them and claims.
        outcomes = self.outcomes.take()
        try:
            states, batch, sent = self.lock.finish_and_acquire(
                [outcome for _, outcome in outcomes], self.instance_id, requests,
                peek=free - len(requests))
        except BaseException:
            self.outcomes.failed(outcomes)
            self._unanswered = requests
            self._unanswered_sent = min(now, resent_sent)
            raise
        self.outcomes.sent(outcomes, states)
        self._offset_ms = batch.now_ms - int(self.clock.time() * 1000)
        owners = self.owners
        if batch.members_epoch != owners.members_epoch or \
                batch.removals_epoch != owners.removals_epoch:
            if owners.heard_epochs(batch.members_epoch, batch.removals_epoch):
                self.lock.heartbeat_soon()  # an instance joined or left: its answer says who
        self._apply_batch(batch, sent, resent_owners, resent_sent)

    def _take_unanswered(self, free: int) -> tuple[list[ClaimRequest], float]:
        """The requests of a claim call that failed, to be sent again as they were: if the
        call went through and only its answer was lost, the backend answers a re-sent
        request with the original claim (same owner token), and the occurrence starts now
        rather than after its lease ran out. Their leases count from the first sending.

        Those too old for that (half a lease) or beyond the free slots go back to the index.
        """
        requests, sent = self._unanswered, self._unanswered_sent
        self._unanswered = []
        if self.clock.monotonic() - sent > self.config.lock_ttl_seconds / 2:
            free = 0
        self._restore(requests[free:])
        return requests[:free], sent

    def _restore(self, requests: list[ClaimRequest]) -> None:
        """Put requests whose claim failed back in the local index, to be asked again."""
        for request in requests:
            entry = self._index.get(request.job_name)
            if entry is not None and entry.due_ms is None:
                self._set_due(entry, request.expected_due_ms, request.expected_next_run_ms)

    def _due_requests(self, now_ms: int, limit: int) -> list[ClaimRequest]:
        # Taken out of the index while in flight; the answer tells what comes next.
        return [self._request(entry, due, now_ms)
                for entry, due in self._index.take_due(now_ms, limit)]

    def _request(self, entry: IndexEntry, due: int, now_ms: int) -> ClaimRequest:
        job = entry.job
        scheduled: Optional[int] = None
        following: Optional[int] = None
        if entry.next_run_ms is not None and entry.next_run_ms <= now_ms:
            scheduled, following = latest_due_ms(job.schedule, entry.next_run_ms, now_ms)
        grace = job.misfire_grace_time
        if grace is None:
            grace = self.config.misfire_grace_seconds
        return ClaimRequest(
            job_name=job.name,
            owner=f"{self._owner_prefix}{next(self._claim_numbers)}",
            expected_due_ms=due,
            expected_next_run_ms=entry.next_run_ms,
            scheduled_ms=scheduled,
            following_ms=following,
            misfire_grace_ms=None if grace is None else int(grace * 1000),
            max_recoveries=job.max_recoveries,
            definition_version=job.definition_version,
            history_limit=self.config.history_limit,
        )

    def _apply_batch(self, batch: ClaimBatch, sent: float,
                     resent: frozenset[str], resent_sent: float) -> None:
        taking_over = self.owners.taking_over
        for claim in batch.claims:
            if taking_over:
                taken = taking_over.pop(claim.job_name, None)
                if taken is not None:
                    self.owners.suspect(claim, *taken, batch.now_ms)
            self._start_claim(claim, resent_sent if claim.owner in resent else sent)
        if batch.refused or batch.due:
            claimed = {claim.job_name for claim in batch.claims}
            for due in batch.refused:
                if taking_over:
                    taking_over.pop(due.name, None)  # someone else was quicker
                entry = self._index.get(due.name)
                if entry is not None and due.name not in claimed:
                    self.apply_due(entry, due)
            may_take = self.owners.may_take
            for due in batch.due:  # peeked: the owner's to take, or anyone's once overdue
                entry = self._index.get(due.name)
                if entry is not None and due.name not in claimed and \
                        may_take(due, batch.now_ms):
                    self.apply_due(entry, due, armed=True)
        for name in batch.skipped:
            self._hooks.metric("job_skipped", name, "misfired")
            self._hooks.log("warning", "occurrence skipped: later than its misfire grace time",
                            job=name)
        for name in batch.abandoned:
            self._hooks.metric("job_skipped", name, "abandoned")
            self._hooks.log("error", "occurrence abandoned: its holder stopped mid-run and "
                            "recovery is exhausted or disabled", job=name)

    def _start_claim(self, claim: Claim, sent: float) -> None:
        entry = self._index.run_started(claim.job_name)
        if entry is None:  # removed here while claiming: the backend dropped it too
            return
        entry.superseded = False
        job = entry.job
        deadline = None if job.timeout is None else self.clock.monotonic() + job.timeout
        ctx = JobContext(
            job_name=job.name,
            scheduled_at=from_ms(claim.scheduled_ms),
            attempt=claim.attempt,
            deadline=None if job.timeout is None else from_ms(
                to_ms(self.clock.now()) + int(job.timeout * 1000)),
            fencing_token=claim.fence,
            kind=claim.kind,
            clock=self.clock,
        )
        run = Run(job, claim, ctx, deadline)
        self.lock.hold(run.lease, ctx.token, sent)
        if self._hooks.logs("info"):
            self._hooks.log("info", "job started", job=job.name, attempt=claim.attempt,
                            scheduled_at=ctx.scheduled_at.isoformat(), fence=claim.fence,
                            kind=claim.kind)
        self.executor.submit(run)

    def next_delay(self) -> float:
        # With every worker busy there is nothing to claim: sleep until a timeout is due or a
        # poll interval passed (workers claim for themselves as they finish, and wake the
        # tick if it should wake sooner).
        delay = self._poll_seconds()
        if self.executor.free_slots() > 0:
            delay -= self.clock.monotonic() - self._last_poll
            top = self._index.earliest()
            if top is not None:
                # Not from whole milliseconds: rounding now down would wake up to 1 ms late.
                backend_now = self.clock.time() + self._offset_ms / 1000
                delay = min(delay, top / 1000 - backend_now)
        deadline = self.executor.next_deadline()
        if deadline is not None:
            delay = min(delay, deadline - self.clock.monotonic())
        return max(0.0, delay)

    def _poll_seconds(self) -> float:
        """How often the backend's due work is looked at with nothing due here: per tick
        interval, and per takeover delay when other live instances own some of the jobs."""
        tick = self.config.tick_seconds
        if self.ownership.alone:
            return tick
        return min(tick, max(self.config.takeover_seconds, 0.05))

    # -- outcomes ----------------------------------------------------------------------------

    def on_run_done(self, run: Run, error: Optional[BaseException], duration: float) -> None:
        self._index.run_ended(run.job.name)
        if run.settled:
            self._hooks.log("warning", "a cancelled handler returned after its outcome was "
                            "settled; its worker is free again", job=run.job.name,
                            seconds=round(duration, 3))
        elif self.lock.lost(run.lease):
            self._leave_for_recovery(run)
        else:
            if run.timed_out:  # it returned within the grace: timed out, whatever it raised
                error, duration = None, run.job.timeout or duration
            outcome = decide_outcome(run, error, duration, self._hooks, timed_out=run.timed_out,
                                     history_limit=self.config.history_limit)
            if self.workers_claim:
                # Recorded along with the claim this worker makes next (see _claim_and_start).
                self.outcomes.add(run, outcome)
            else:
                self.outcomes.report(run, outcome)

    def _leave_for_recovery(self, run: Run) -> None:
        """A run cancelled for its lost lease: whatever it returned, its result is not
        recorded — only a run that held its lease to the end counts, and a failure caused by
        the cancellation is ours, not the handler's. The occurrence is an orphan once the
        lease has run out in the backend (nobody refreshes it), and is recovered as the next
        attempt, here or elsewhere, unless another instance took it over already. No backend
        call is needed, which matters: losing a lease often means the backend is out of
        reach."""
        self.lock.forget(run.lease)
        self._hooks.log("warning", "a run cancelled for its lost lease ended: its result is "
                        "not recorded, and its occurrence is recovered as the next attempt "
                        "once the lease has run out", job=run.job.name,
                        attempt=run.claim.attempt, fence=run.claim.fence)
        entry = self._index.get(run.job.name)
        if entry is not None:  # asked at once; the answer says when the lease runs out
            self._set_due(entry, self._backend_now_ms(), entry.next_run_ms, armed=True)
            self.wake.set()

    def _settle_timeout(self, run: Run) -> None:
        self._hooks.log("warning", "job timed out and its handler ignores the cancellation: "
                        "the attempt is settled without it, its worker stays busy until it "
                        "returns, and a retry waits for its lease to run out",
                        job=run.job.name, attempt=run.claim.attempt)
        timeout = run.job.timeout or 0.0
        self.outcomes.report(run, decide_outcome(run, None, timeout, self._hooks,
                                                  timed_out=True, still_running=True,
                                                  history_limit=self.config.history_limit))

    def _after_finish(self, run: Run, state: Optional[JobState]) -> None:
        entry = self._index.get(run.job.name)
        if entry is None:
            return
        if state is None:  # stale: learn the current state from the backend
            (state,) = self.backend.get_states([run.job.name])
            if state is None:
                # Lost or reset under the run (data loss, garbage): left out of the index it
                # would never run here again. Asked for at once, the claim's answer says
                # whether it was removed (dropped here) or lost (re-created).
                self._set_due(entry, self._backend_now_ms(), entry.next_run_ms, armed=True)
                self.wake.set()
                return
        entry.job._saw(state)
        # A retry of a run of this instance is claimed here on time, whoever owns the job:
        # the owner did not see the result that scheduled it.
        retry = state.occurrence_status == OccurrenceStatus.RETRY_WAIT
        self._set_due(entry, state.due_ms, state.next_run_ms, armed=True if retry else None)

    # -- the local index ---------------------------------------------------------------------

    def apply_state(self, entry: IndexEntry, state: JobState) -> None:
        entry.job._saw(state)
        self._set_due(entry, state.due_ms, state.next_run_ms)

    def apply_due(self, entry: IndexEntry, due: DueEntry,
                  armed: Optional[bool] = None) -> None:
        """Learn a job's due time from the backend; ``armed``: watch it whether or not this
        instance owns the job (it was asked here, or taken over)."""
        if due.missing:
            if due.removed:
                self._drop(entry, "removed by another scheduler of the group")
            else:
                self.rebuild([entry])
            return
        if due.superseded:
            self._leave_to_others(entry, due)
            return
        self._set_due(entry, due.due_ms, due.next_run_ms, armed)

    def _leave_to_others(self, entry: IndexEntry, due: DueEntry) -> None:
        """The group runs a definition of the job registered since by another instance (a
        rolling deploy): claim nothing of it, and write none of this schedule back.

        The job leaves the local index; a peek that finds it due brings it back, to be asked
        again, so that it runs here once it is registered back with this definition (a
        rollback) — at most one refused claim per tick meanwhile.
        """
        if not entry.superseded:
            entry.superseded = True
            self._hooks.log("warning", "another instance registered this job with a different "
                            "definition (a rolling deploy?): the group runs the latest one, "
                            "and this instance leaves the job to the instances that have it",
                            job=entry.job.name)
        self._index.set_due(entry, None, due.next_run_ms)

    def _set_due(self, entry: IndexEntry, due_ms: Optional[int],
                 next_run_ms: Optional[int], armed: Optional[bool] = None) -> None:
        """Record a job's due time: watched here if this instance owns the job (or ``armed``),
        else parked for its owner."""
        if armed is None:
            self._pinned.discard(entry.job.name)
            armed = self.ownership.owns(entry.job.name)
        elif armed:
            self._pinned.add(entry.job.name)
        if due_ms is not None and next_run_ms is not None and next_run_ms < due_ms and \
                self._backend_now_ms() < next_run_ms:
            # An occurrence runs elsewhere (due = its lease expiry) and the job was advanced
            # to its following occurrence: ask for that one on time. If the run is still
            # going then, the refusal brings the lease expiry back.
            due_ms = next_run_ms
        self._index.set_due(entry, due_ms, next_run_ms, armed=armed)

    def _drop(self, entry: IndexEntry, why: str) -> None:
        self._index.discard(entry)
        self._hooks.log("info", "job dropped", job=entry.job.name, reason=why)

    def rebuild(self, entries: list[IndexEntry]) -> None:
        """Re-create jobs the backend lost (data loss, corrupt state), continuing from what
        this instance last saw so that an occurrence it already ran does not run again."""
        now = self.backend_now()
        definitions = [rebuilt_definition(entry, now) for entry in entries]
        self._hooks.log("warning", "backend lost jobs; re-creating them",
                        jobs=[d.name for d in definitions])
        for entry, state in zip(entries, self.backend.register(definitions)):
            self.apply_state(entry, state)

    def learn_backend_clock(self) -> datetime:
        """Ask the backend for its time (one call), and keep the offset to ours."""
        now_ms = self.backend.now_ms()
        self._offset_ms = now_ms - int(self.clock.time() * 1000)
        return from_ms(now_ms)

    def backend_now(self) -> datetime:
        """The backend's time, from our clock and the offset learnt last."""
        return from_ms(self._backend_now_ms())

    def _backend_now_ms(self) -> int:
        return int(self.clock.time() * 1000) + self._offset_ms
