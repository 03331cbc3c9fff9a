"""The harness and model behind ``tests/test_state_machine.py``.

A :class:`Group` runs a few schedulers on one store, each stepped by hand
(``start(background=False)``): its handlers block until the test releases them, every backend
call that claims, finishes, interrupts or registers is recorded through a
:class:`RecordingBackend`, and the handlers record when they start and return. All of it
lands, in the order it happened, in one :class:`History`.

A :class:`Model` replays that history together with what the test did (pause, crash, wipe...)
and checks each event against the rules of the README and of the backend contract; the
stateful test calls :meth:`Model.catch_up` after every step. The model is the *specification*:
it never reads the scheduler's private state, only the backend's answers and the handlers'
records.

Time: on the memory backend every clock is a :class:`FakeClock` and "advance" moves them all.
Redis decides by its own ``TIME``, which cannot be moved, so there "advance" waits (a short,
bounded poll) and the schedulers' fake clocks are set to Redis's time before each step; the
durations are scaled down so that a lease (300 ms) can run out within a test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from pyscheduler import (
    FakeClock,
    IntervalSchedule,
    Job,
    JobContext,
    JobNotFoundError,
    JobStatus,
    OnceSchedule,
    RetryPolicy,
    RetryStrategy,
    Scheduler,
    SchedulerConfig,
)
from pyscheduler._time import from_ms, to_ms
from pyscheduler.backends.base import (
    Backend,
    ClaimBatch,
    ClaimRequest,
    JobDefinition,
    JobState,
    Lease,
    OccurrenceKind,
    Outcome,
)

__all__ = ["Group", "History", "JobSpec", "Model", "RecordingBackend", "Timing"]

#: the longest anything crossing threads may take (real seconds)
WAIT = 10.0
#: a handler nobody released gives up after this long, so a broken test leaks no thread
HANDLER_LIMIT = 60.0


class HandlerError(Exception):
    """What a handler told to fail raises."""


# -- the set-up ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """The test's durations, in milliseconds of the backend's clock: multiples of one unit
    (a second of fake time on the memory backend, 10 ms of Redis's real time)."""

    unit_ms: int
    #: how long the Redis variant's refresher thread sleeps (real seconds); 0: the memory
    #: variant, whose leases are refreshed at every step of an advance
    refresh_sleep: float = 0.0

    @property
    def period(self) -> int:
        return 10 * self.unit_ms

    @property
    def flaky_period(self) -> int:
        return 15 * self.unit_ms

    @property
    def once_after(self) -> int:
        """When the once job is due, after t0."""
        return 20 * self.unit_ms

    @property
    def lease(self) -> int:
        """The lease TTL: it outlives a few refreshes, and an advance can outlast it."""
        return 30 * self.unit_ms

    @property
    def refresh(self) -> int:
        return 5 * self.unit_ms

    @property
    def retry(self) -> int:
        return 5 * self.unit_ms

    @property
    def tick(self) -> int:
        return self.unit_ms


@dataclass(frozen=True)
class JobSpec:
    """One job of the group, registered by every instance."""

    name: str
    #: the interval (ms), or ``None`` for a once job at ``t0 + once_after``
    period_ms: Optional[int]
    max_retries: int
    #: ``Job(recover=...)``: ``False`` gives an orphaned occurrence up (at most once)
    recover: bool = True

    @property
    def max_recoveries(self) -> int:
        return max(1, self.max_retries) if self.recover else 0

    def on_grid(self, t0_ms: int, scheduled_ms: int, timing: Timing) -> bool:
        if self.period_ms is None:
            return scheduled_ms == t0_ms + timing.once_after
        return scheduled_ms >= t0_ms and (scheduled_ms - t0_ms) % self.period_ms == 0


def job_specs(timing: Timing) -> list[JobSpec]:
    return [JobSpec("every", timing.period, 1), JobSpec("flaky", timing.flaky_period, 2),
            JobSpec("once", None, 0, recover=False)]


# -- the history -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str
    instance: str
    data: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.data.items())
        return f"{self.kind}({self.instance}{', ' if fields else ''}{fields})"


class History:
    """Every event of a test, in order, from every thread."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = threading.Condition()

    def add(self, event_kind: str, instance: str, **data: Any) -> None:
        with self.changed:
            self.events.append(Event(event_kind, instance, data))
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str,
                 timeout: float = WAIT) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def __len__(self) -> int:
        with self.changed:
            return len(self.events)


class RecordingBackend:
    """One instance's view of the shared backend, recording what the scheduler does with it.

    A call and its record are not one atomic step, but the test never lets two instances
    touch one job at once: claims come from the test's thread, and a finish from a worker
    only while the test waits for it.
    """

    def __init__(self, inner: Backend, history: History, instance: str,
                 context: Callable[[], str]) -> None:
        self._inner = inner
        self._history = history
        self._instance = instance
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def register(self, definitions: Sequence[JobDefinition]) -> list[JobState]:
        states = self._inner.register(definitions)
        self._history.add("registered", self._instance, context=self._context(),
                          names=[d.name for d in definitions], states=states)
        return states

    def claim(self, instance_id: str, requests: Sequence[ClaimRequest], lease_ms: int,
              peek: int) -> ClaimBatch:
        batch = self._inner.claim(instance_id, requests, lease_ms, peek)
        self._claimed(batch)
        return batch

    def finish(self, outcomes: Sequence[Outcome]) -> list[Optional[JobState]]:
        before = self._inner.now_ms()
        states = self._inner.finish(outcomes)
        self._finished(outcomes, states, before)
        return states

    def finish_and_claim(self, outcomes: Sequence[Outcome], instance_id: str,
                         requests: Sequence[ClaimRequest], lease_ms: int, peek: int
                         ) -> tuple[list[Optional[JobState]], ClaimBatch]:
        before = self._inner.now_ms()
        states, batch = self._inner.finish_and_claim(
            outcomes, instance_id, requests, lease_ms, peek)
        self._finished(outcomes, states, before)
        self._claimed(batch)
        return states, batch

    def refresh(self, leases: Sequence[Lease], lease_ms: int) -> list[bool]:
        before = self._inner.now_ms()
        held = self._inner.refresh(leases, lease_ms)
        for lease, ok in zip(leases, held):
            self._history.add("refreshed", self._instance, job=lease.job_name,
                              fence=lease.fence, held=ok, before_ms=before)
        return held

    def interrupt(self, leases: Sequence[Lease]) -> list[bool]:
        released = self._inner.interrupt(leases)
        for lease, ok in zip(leases, released):
            self._history.add("interrupted", self._instance, job=lease.job_name,
                              fence=lease.fence, released=ok)
        return released

    def _claimed(self, batch: ClaimBatch) -> None:
        self._history.add("claimed", self._instance, claims=list(batch.claims),
                          abandoned=list(batch.abandoned), skipped=list(batch.skipped),
                          now_ms=batch.now_ms)

    def _finished(self, outcomes: Sequence[Outcome], states: Sequence[Optional[JobState]],
                  before: int) -> None:
        for outcome, state in zip(outcomes, states):
            self._history.add("finished", self._instance, job=outcome.lease.job_name,
                              fence=outcome.lease.fence, succeeded=outcome.succeeded,
                              retry_delay_ms=outcome.retry_delay_ms,
                              accepted=state is not None, before_ms=before)


# -- the instances ---------------------------------------------------------------------------


@dataclass(eq=False)
class LiveRun:
    """A handler that started and has not been released yet."""

    instance: str
    job: str
    fence: int
    release: threading.Event = field(default_factory=threading.Event)
    fail: bool = False


@dataclass(eq=False)
class Instance:
    name: str
    scheduler: Scheduler
    clock: FakeClock
    skew_ms: int
    #: ``alive``, ``crashed`` (abandoned mid-run, like ``kill -9``) or ``stopped``
    status: str = "alive"


class Group:
    """Schedulers sharing one store, stepped by the test.

    :param make_backend: a backend for a new instance (the same object for memory, a new
        client for Redis).
    :param backend_clock: the memory backend's clock, or ``None`` for Redis.
    :param wipe: empties the store (Redis ``FLUSHALL``), or ``None`` where that cannot be done.
    :param cleanup: called last by :meth:`close`.
    """

    def __init__(self, timing: Timing, make_backend: Callable[[], Backend],
                 backend_clock: Optional[FakeClock], t0_ms: int,
                 wipe: Optional[Callable[[], None]] = None,
                 cleanup: Callable[[], None] = lambda: None) -> None:
        self._cleanup = cleanup
        self.timing = timing
        self.history = History()
        self.specs = job_specs(timing)
        self.t0_ms = t0_ms
        self._make_backend = make_backend
        self._backend_clock = backend_clock
        #: the test's own client of the store, for reading it (never a scheduler's)
        self.observer = make_backend()
        self._wipe = wipe
        self.instances: list[Instance] = []
        self.live: dict[tuple[str, int], LiveRun] = {}
        self._live_lock = threading.Lock()
        self.context = "setup"
        self.model = Model(self)
        self._alive_lock = threading.Lock()
        self._refresher_stop = threading.Event()
        self._refresher: Optional[threading.Thread] = None
        if timing.refresh_sleep:
            self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                               name="state-test-refresher")
            self._refresher.start()

    @property
    def deterministic(self) -> bool:
        """Whether a step's effect depends on the test alone, not on real time."""
        return self._backend_clock is not None

    @property
    def can_wipe(self) -> bool:
        return self._wipe is not None

    def now_ms(self) -> int:
        return self.observer.now_ms()

    def alive(self) -> list[Instance]:
        return [i for i in self.instances if i.status == "alive"]

    def instance(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)

    # -- actions -----------------------------------------------------------------------------

    def start_instance(self, skew_units: int) -> Instance:
        name = f"i{len(self.instances)}"
        skew_ms = skew_units * self.timing.unit_ms
        clock = FakeClock(from_ms(self.now_ms() + skew_ms))
        timing = self.timing
        config = SchedulerConfig(
            tick_interval=timing.tick / 1000, max_concurrent=4, lock_ttl=timing.lease / 1000,
            lock_refresh_interval=timing.refresh / 1000, instance_id=name)
        backend = RecordingBackend(self._make_backend(), self.history, name,
                                   lambda: self.context)
        scheduler = Scheduler(backend, config=config, clock=clock)
        for spec in self.specs:
            scheduler.register(self._job(name, spec))
        instance = Instance(name, scheduler, clock, skew_ms)
        self.history.add("instance_started", name, skew_ms=skew_ms)
        self.context = "start"
        with self._alive_lock:
            self.instances.append(instance)  # first: close() stops it even if start fails
        scheduler.start(background=False)
        return instance

    def _job(self, instance: str, spec: JobSpec) -> Job:
        def handler(ctx: JobContext) -> None:
            self._run(instance, ctx)

        policy = None
        if spec.max_retries:
            delay = self.timing.retry / 1000
            policy = RetryPolicy(max_retries=spec.max_retries, initial_interval=delay,
                                 max_interval=delay, strategy=RetryStrategy.FIXED)
        t0 = from_ms(self.t0_ms)
        if spec.period_ms is None:
            schedule: Any = OnceSchedule(from_ms(self.t0_ms + self.timing.once_after))
        else:
            schedule = IntervalSchedule(spec.period_ms / 1000, start_at=t0)
        return Job(spec.name, schedule, handler, retry_policy=policy, recover=spec.recover)

    def _run(self, instance: str, ctx: JobContext) -> None:
        run = LiveRun(instance, ctx.job_name, ctx.fencing_token)
        with self._live_lock:
            self.live[(ctx.job_name, ctx.fencing_token)] = run
        self.history.add("started", instance, job=ctx.job_name, fence=ctx.fencing_token,
                         scheduled_ms=to_ms(ctx.scheduled_at), attempt=ctx.attempt,
                         occ_kind=ctx.kind, backend_now_ms=self.observer.now_ms())
        released = run.release.wait(HANDLER_LIMIT)
        with self._live_lock:
            self.live.pop((ctx.job_name, ctx.fencing_token), None)
        self.history.add("returned", instance, job=ctx.job_name, fence=ctx.fencing_token,
                         released=released, failed=run.fail)
        if run.fail:
            raise HandlerError(f"{ctx.job_name} attempt {ctx.attempt} told to fail")

    def local_jobs(self, instance: Instance) -> set[str]:
        """The jobs ``instance`` has registered and not dropped."""
        return {job.name for job in instance.scheduler.jobs()}

    def live_runs(self, instance: Optional[str] = None) -> list[LiveRun]:
        with self._live_lock:
            runs = sorted(self.live.values(), key=lambda r: (r.instance, r.job, r.fence))
        return [r for r in runs if instance is None or r.instance == instance]

    def advance(self, ms: int) -> None:
        """Let ``ms`` of the backend's clock pass, refreshing the leases of live instances
        as their refresher threads would."""
        self.history.add("advance", "-", ms=ms)
        if self._backend_clock is None:
            target = self.now_ms() + ms
            deadline = time.monotonic() + ms / 1000 + 5.0
            while self.now_ms() <= target:
                assert time.monotonic() < deadline, "the Redis clock did not move"
                time.sleep(0.005)
            self.sync_clocks()
            return
        left = ms
        while left > 0:
            step = min(left, self.timing.refresh)
            left -= step
            for clock in [self._backend_clock] + [i.clock for i in self.instances]:
                clock.advance(step / 1000)
            for instance in self.alive():
                instance.scheduler.lock.refresh()

    def step_clock(self, instance: Instance, ms: int) -> None:
        """``instance``'s clock jumps ahead (an NTP step): until its next claim answer, it
        believes the backend's clock is ``ms`` later than it is."""
        self.history.add("clock_stepped", instance.name, ms=ms)
        instance.skew_ms += ms
        instance.clock.advance(ms / 1000)

    def sync_clocks(self) -> None:
        """Redis: move every scheduler's fake clock to Redis's time (plus its skew)."""
        if self._backend_clock is not None:
            return
        now = self.now_ms()
        for instance in self.instances:
            target = (now + instance.skew_ms) / 1000
            ahead = target - instance.clock.time()
            if ahead > 0:
                instance.clock.advance(ahead)

    def tick(self, instance: Instance) -> None:
        """One ``run_pending`` of ``instance``; returns once the handlers it started run."""
        self.sync_clocks()
        self.context = "tick"
        mark = len(self.history)
        instance.scheduler.run_pending()
        with self.history.changed:
            claimed = [(c.job_name, c.fence) for e in self.history.events[mark:]
                       if e.kind == "claimed" and e.instance == instance.name
                       for c in e.claims]

        def all_started() -> bool:
            started = {(e.job, e.fence) for e in self.history.events[mark:]
                       if e.kind == "started"}
            return all(key in started for key in claimed)

        self.history.wait_for(all_started, f"the handlers of {claimed} to start")

    def finish(self, run: LiveRun, fail: bool) -> None:
        """Release one handler and wait until its outcome is recorded."""
        self.context = "finish"
        instance = self.instance(run.instance)
        run.fail = fail
        run.release.set()
        deadline = time.monotonic() + WAIT
        while any(r.claim.fence == run.fence and r.job.name == run.job
                  for r in instance.scheduler.executor.unfinished()):
            assert time.monotonic() < deadline, f"{run} was not recorded in time"
            time.sleep(0.001)

    def manage(self, instance: Instance, op: str, job: str) -> None:
        self.context = op
        had_local = job in self.local_jobs(instance)
        before = self.now_ms()
        error = None
        try:
            getattr(instance.scheduler, op)(job)
        except JobNotFoundError as exc:
            error = exc
        after = self.now_ms()
        self.history.add("managed", instance.name, op=op, job=job, had_local=had_local,
                         before_ms=before, after_ms=after, not_found=error is not None)

    def crash(self, instance: Instance) -> None:
        """Abandon ``instance`` mid-run: no more ticks, refreshes or outcomes (``kill -9``)."""
        with self._alive_lock:
            instance.status = "crashed"
        self.history.add("crashed", instance.name, now_ms=self.now_ms())

    def stop(self, instance: Instance) -> None:
        """A graceful stop that does not wait: running occurrences are handed back."""
        with self._alive_lock:
            instance.status = "stopped"
        self.history.add("stopping", instance.name)
        self.context = "stop"
        instance.scheduler.stop(timeout=0)

    def wipe(self) -> None:
        assert self._wipe is not None
        self.history.add("wiped", "-", now_ms=self.now_ms())
        self._wipe()

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release every handler and stop every scheduler; leaves no thread behind."""
        self._refresher_stop.set()
        if self._refresher is not None:
            self._refresher.join(WAIT)
        errors = []
        try:
            for run in self.live_runs():
                run.release.set()
            for instance in self.instances:
                try:
                    instance.scheduler.stop(timeout=WAIT)
                except Exception as exc:  # one failed stop must not leak the others
                    errors.append(exc)
            self.history.wait_for(lambda: not self.live, "every handler to return")
        finally:
            self.observer.close()
            self._cleanup()
        if errors:
            raise errors[0]

    def _refresh_loop(self) -> None:
        # The refresher threads of the live Redis instances, in one: the stepped schedulers
        # have none, and a Redis lease runs out in real time.
        while not self._refresher_stop.wait(self.timing.refresh_sleep):
            with self._alive_lock:
                for instance in self.instances:
                    if instance.status == "alive":
                        try:
                            instance.scheduler.lock.refresh()
                        except Exception:  # a wipe or a stop may race a refresh
                            pass


# -- the model -------------------------------------------------------------------------------


@dataclass
class Occurrence:
    """The model's view of a job's occurrence in flight."""

    scheduled_ms: int
    origin: str  # regular or manual
    attempt: int
    fence: int
    holder: str
    claimed_at_ms: int
    status: str = "running"  # running, retry_wait or interrupted
    recoveries: int = 0
    retry_not_before_ms: int = 0
    #: which run_now request a manual occurrence serves (0 for a regular one)
    request: int = 0
    #: the backend's time before the holder's last refresh of the lease that extended it
    #: (0: none since the claim, whose time counts then)
    refreshed_ms: int = 0


@dataclass
class JobModel:
    spec: JobSpec
    #: bumped when the job's stored state goes (removed, or the store wiped)
    generation: int = 0
    exists: bool = True
    #: removed, and its tombstone still stored (no wipe since)
    tombstone: bool = False
    #: instances that dropped the job themselves (by removing it)
    dropped_by: set[str] = field(default_factory=set)
    paused: bool = False
    manual: Optional[tuple[int, int]] = None  # the pending run_now request, bracketed
    occ: Optional[Occurrence] = None
    last_fence: int = 0
    generation_fence: Optional[int] = None
    last_regular_ms: Optional[int] = None
    once_claimed: bool = False
    #: per instance, the regular occurrences it recorded the outcome of: it knows they ran
    #: (kept across wipes, not removals)
    known_ran: dict[str, set[int]] = field(default_factory=dict)
    run_count: int = 0
    failure_count: int = 0
    last_failed: bool = False
    settled: Counter[tuple[int, int, str, int]] = field(default_factory=Counter)

    def forget(self) -> None:
        """The stored state went: a new generation starts when it is created again."""
        self.generation += 1
        self.exists = False
        self.paused = False
        self.manual = None
        self.occ = None
        self.generation_fence = None
        self.last_regular_ms = None
        self.once_claimed = False
        self.run_count = self.failure_count = 0
        self.last_failed = False


class Model:
    """Replays a :class:`Group`'s history and checks every event against the rules."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.jobs = {spec.name: JobModel(spec) for spec in group.specs}
        self.status: dict[str, str] = {}
        self.live: dict[tuple[str, int], tuple[str, int]] = {}  # -> (instance, generation)
        self.claimed: dict[tuple[str, int], Any] = {}  # claims whose handler did not start
        self.position = 0
        self.wiped = False
        self.manual_runs = 0

    def catch_up(self) -> None:
        """Check every event recorded since the last call."""
        history = self.group.history
        with history.changed:
            events = history.events[self.position:]
            self.position += len(events)
        for event in events:
            handler = getattr(self, f"_on_{event.kind}")
            try:
                handler(event)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n  at {event!r}") from None

    # -- what the test did -------------------------------------------------------------------

    def _on_instance_started(self, event: Event) -> None:
        self.status[event.instance] = "alive"

    def _on_advance(self, event: Event) -> None:
        pass

    def _on_clock_stepped(self, event: Event) -> None:
        pass

    def _on_crashed(self, event: Event) -> None:
        self.status[event.instance] = "crashed"

    def _on_stopping(self, event: Event) -> None:
        self.status[event.instance] = "stopped"

    def _on_wiped(self, event: Event) -> None:
        self.wiped = True
        for job in self.jobs.values():
            job.forget()
            job.tombstone = False

    def _on_managed(self, event: Event) -> None:
        job = self.jobs[event.job]
        if event.not_found:
            # Unknown here and in the store; or removed elsewhere, and this instance, which
            # had not heard yet, drops it too.
            assert not job.exists and (not event.had_local or job.tombstone), (
                f"{event.op}({event.job!r}) raised JobNotFoundError for a job that exists")
            job.dropped_by.add(event.instance)
            return
        if event.op == "remove":
            if job.exists:
                job.forget()
                job.known_ran.clear()
                job.tombstone = True
            job.dropped_by.add(event.instance)
            return
        # A job lost with the store is first created again (a "registered" event).
        assert job.exists, f"{event.op}({event.job!r}) succeeded on a job that is gone"
        if event.op == "pause":
            job.paused = True
        elif event.op == "resume":
            job.paused = False
        elif event.op == "run_now" and job.manual is None:
            job.manual = (event.before_ms, event.after_ms)

    def _on_registered(self, event: Event) -> None:
        for name, state in zip(event.names, event.states):
            job = self.jobs[name]
            if job.exists:
                continue
            assert not job.tombstone or event.context == "start", (
                f"{name!r} was removed, and {event.context}() on {event.instance}, which had "
                "not seen the removal yet, created it again")
            # Re-created after a loss: never from an occurrence this instance knows ran.
            known = job.known_ran.get(event.instance, set())
            assert state.next_run_ms is None or state.next_run_ms > max(known, default=-1), (
                f"{event.instance} re-created {name!r} at {state.next_run_ms}, but it recorded "
                f"the outcome of {max(known)}")
            job.exists = True
            job.tombstone = False
            # A once job that ran is created done by an instance that knows it ran.
            job.once_claimed = job.spec.period_ms is None and state.next_run_ms is None

    # -- what the scheduler did --------------------------------------------------------------

    def _on_claimed(self, event: Event) -> None:
        assert not event.skipped, f"skipped {event.skipped} without a misfire grace time"
        for name in event.abandoned:
            self._abandoned(self.jobs[name], event.now_ms)
        for claim in event.claims:
            self._claim(event.instance, claim)

    def _abandoned(self, job: JobModel, now_ms: int) -> None:
        occ = job.occ
        assert occ is not None, f"{job.spec.name!r} abandoned with nothing in flight"
        assert self._orphaned(occ, now_ms), (
            f"{job.spec.name!r} abandoned while its holder lives and holds its lease")
        assert occ.recoveries >= job.spec.max_recoveries, (
            f"{job.spec.name!r} abandoned after {occ.recoveries} recoveries, of "
            f"{job.spec.max_recoveries}")
        self._settle(job, occ, succeeded=False)

    def _orphaned(self, occ: Occurrence, now_ms: int) -> bool:
        """Whether another instance may take ``occ`` over at ``now_ms`` (backend time)."""
        return occ.status == "interrupted" or (
            occ.status == "running" and (self.status[occ.holder] != "alive"
                                         or self._lease_ran_out(occ, now_ms)))

    def _lease_ran_out(self, occ: Occurrence, now_ms: int) -> bool:
        """Whether ``occ``'s lease may have run out by ``now_ms`` though its holder lives: no
        refresh extended it for a lease's length. On Redis leases run out in real time, so a
        starved refresher (a loaded machine) loses a live holder's lease; the holder learns
        it from its next refresh and its late outcome is rejected, as for a frozen one."""
        return now_ms >= max(occ.claimed_at_ms, occ.refreshed_ms) + self.group.timing.lease

    def _on_refreshed(self, event: Event) -> None:
        occ = self.jobs[event.job].occ
        # A refresh is recorded once it returns, maybe after the holder's finish (sent
        # meanwhile) or a recovery: only a refresh of the lease still in flight counts.
        if event.held and occ is not None and occ.fence == event.fence \
                and occ.status == "running" and occ.holder == event.instance:
            occ.refreshed_ms = max(occ.refreshed_ms, event.before_ms)

    def _claim(self, instance: str, claim: Any) -> None:
        name = claim.job_name
        job = self.jobs[name]
        spec = job.spec
        what = f"{claim.kind} claim of {name!r} (attempt {claim.attempt}, fence {claim.fence})"
        assert job.exists, f"{what}: the job is not stored (removed or lost)"
        assert not job.paused, f"{what}: the job is paused"
        # Fences strictly increase per job, in claim order, across everything.
        assert claim.fence > job.last_fence, (
            f"{what}: fence not above the previous one ({job.last_fence})")
        assert claim.claimed_at_ms >= claim.scheduled_ms, f"{what}: claimed before it was due"
        # No overlapping runs unless a crash, a stop or a lost store explains it.
        occ = job.occ
        for (other, fence), (holder, generation) in self.live.items():
            if other == name and generation == job.generation:
                assert self.status[holder] != "alive" or (
                    occ is not None and occ.fence == fence
                    and self._lease_ran_out(occ, claim.claimed_at_ms)), (
                    f"{what}: fence {fence} still runs on {holder}, which is alive and "
                    "holds its lease")
        if claim.kind in (OccurrenceKind.REGULAR, OccurrenceKind.MANUAL):
            assert occ is None, f"{what}: another occurrence is in flight: {occ}"
            assert claim.attempt == 1, f"{what}: a new occurrence starts at attempt 1"
            if claim.kind == OccurrenceKind.MANUAL:
                assert job.manual is not None, f"{what}: nobody asked for it (run_now)"
                low, high = job.manual
                assert low <= claim.scheduled_ms <= high, (
                    f"{what}: scheduled at {claim.scheduled_ms}, not when asked "
                    f"({low}..{high})")
                job.manual = None
            else:
                self._regular(job, claim, what)
            self.manual_runs += claim.kind == OccurrenceKind.MANUAL
            job.occ = Occurrence(claim.scheduled_ms, claim.kind, 1, claim.fence, instance,
                                 claim.claimed_at_ms,
                                 request=self.manual_runs if claim.kind == "manual" else 0)
        else:
            assert occ is not None, f"{what}: no occurrence in flight"
            assert claim.scheduled_ms == occ.scheduled_ms, (
                f"{what}: of {claim.scheduled_ms}, but {occ.scheduled_ms} is in flight")
            assert claim.attempt == occ.attempt + 1, (
                f"{what}: attempt {occ.attempt} was the last")
            if claim.kind == OccurrenceKind.RETRY:
                assert occ.status == "retry_wait", f"{what}: no failure to retry ({occ})"
                assert claim.claimed_at_ms >= occ.retry_not_before_ms, (
                    f"{what}: before its retry delay ({occ.retry_not_before_ms})")
            else:
                assert claim.kind == OccurrenceKind.RECOVERY, what
                assert self._orphaned(occ, claim.claimed_at_ms), (
                    f"{what}: its holder {occ.holder} is alive and holds its lease ({occ})")
                if occ.status == "running":
                    assert claim.claimed_at_ms >= occ.claimed_at_ms + self.group.timing.lease, (
                        f"{what}: before the lease of {occ} could run out")
                occ.recoveries += 1
                assert occ.recoveries <= spec.max_recoveries, (
                    f"{what}: recovery {occ.recoveries} of at most {spec.max_recoveries}")
            occ.attempt, occ.fence, occ.holder = claim.attempt, claim.fence, instance
            occ.status, occ.claimed_at_ms = "running", claim.claimed_at_ms
            occ.refreshed_ms = 0
        job.last_fence = job.generation_fence = claim.fence
        self.claimed[(name, claim.fence)] = (instance, claim)

    def _regular(self, job: JobModel, claim: Any, what: str) -> None:
        group = self.group
        assert job.spec.on_grid(group.t0_ms, claim.scheduled_ms, group.timing), (
            f"{what}: {claim.scheduled_ms} is not an occurrence of its schedule")
        if job.spec.period_ms is None:
            assert not job.once_claimed, f"{what}: the once job's occurrence ran already"
            job.once_claimed = True
        assert job.last_regular_ms is None or claim.scheduled_ms > job.last_regular_ms, (
            f"{what}: {claim.scheduled_ms} is not after the last regular occurrence "
            f"{job.last_regular_ms}")
        job.last_regular_ms = claim.scheduled_ms

    def _on_started(self, event: Event) -> None:
        key = (event.job, event.fence)
        assert key in self.claimed, f"a handler started without a claim: {event}"
        instance, claim = self.claimed.pop(key)
        assert instance == event.instance, f"claimed by {instance}, run on {event.instance}"
        assert (event.scheduled_ms, event.attempt, event.occ_kind) == (
            claim.scheduled_ms, claim.attempt, claim.kind), f"the context differs from {claim}"
        assert event.backend_now_ms >= event.scheduled_ms, (
            "the handler started before its scheduled_at by the backend's clock")
        self.live[key] = (event.instance, self.jobs[event.job].generation)

    def _on_returned(self, event: Event) -> None:
        assert event.released, f"{event}: nobody released the handler"
        self.live.pop((event.job, event.fence), None)

    def _on_finished(self, event: Event) -> None:
        job = self.jobs[event.job]
        occ = job.occ
        current = (job.exists and occ is not None and occ.status == "running"
                   and occ.fence == event.fence)
        assert event.accepted == current, (
            f"the outcome of fence {event.fence} was "
            f"{'accepted' if event.accepted else 'rejected'}, but the occurrence in flight "
            f"is {occ}")
        if not current:
            return
        assert occ is not None
        job.run_count += 1
        if event.retry_delay_ms is not None and not event.succeeded:
            occ.status = "retry_wait"
            occ.retry_not_before_ms = event.before_ms + event.retry_delay_ms
        else:
            self._settle(job, occ, succeeded=event.succeeded, recorded_by=event.instance)

    def _settle(self, job: JobModel, occ: Occurrence, *, succeeded: bool,
                recorded_by: Optional[str] = None) -> None:
        # Two run_now requests can ask for the same instant (one while the other runs).
        key = (job.generation, occ.scheduled_ms, occ.origin, occ.request)
        job.settled[key] += 1
        # At most one outcome per occurrence: a stale one (after a takeover) is rejected.
        assert job.settled[key] == 1, f"occurrence {key} of {job.spec.name!r} settled twice"
        if occ.origin == OccurrenceKind.REGULAR and recorded_by is not None:
            job.known_ran.setdefault(recorded_by, set()).add(occ.scheduled_ms)
        if not succeeded:
            job.failure_count += 1
        job.last_failed = not succeeded
        job.occ = None

    def _on_interrupted(self, event: Event) -> None:
        job = self.jobs[event.job]
        occ = job.occ
        current = (job.exists and occ is not None and occ.status == "running"
                   and occ.fence == event.fence and occ.holder == event.instance)
        assert event.released == current, (
            f"handing back fence {event.fence}: released={event.released}, but in flight: "
            f"{occ}")
        if current:
            assert occ is not None
            occ.status = "interrupted"

    # -- checks between steps ----------------------------------------------------------------

    def check_step(self) -> None:
        """What must hold whenever the test is between two steps."""
        assert not self.claimed, f"claimed, but the handler never started: {self.claimed}"

    def expected_status(self, job: JobModel, instance: str) -> JobStatus:
        occ = job.occ
        if job.paused:
            return JobStatus.PAUSED
        if occ is not None and occ.status == "running":
            return JobStatus.RUNNING
        if occ is None and job.spec.period_ms is None and job.once_claimed and (
                job.manual is None):
            return JobStatus.FAILED if job.last_failed else JobStatus.COMPLETED
        if any(holder == instance and name == job.spec.name
               for (name, _), (holder, _) in self.live.items()):
            return JobStatus.RUNNING  # this process still runs one (after a takeover)
        return JobStatus.SCHEDULED

    def check_views(self) -> None:
        """What every live instance reports (``jobs()``, ``get_job``) agrees with the model."""
        for instance in self.group.alive():
            jobs = instance.scheduler.jobs()
            names = [j.name for j in jobs]
            assert names == sorted(names), f"{instance.name}: jobs() not sorted: {names}"
            states = dict(zip(names, self.group.observer.get_states(names)))
            for listed in jobs:
                job = self.jobs[listed.name]
                assert instance.name not in job.dropped_by, (
                    f"{instance.name} lists {listed.name!r}, which it removed")
                if not job.exists or states[listed.name] is None:
                    continue  # gone from the store; this instance learns that at its tick
                fresh = instance.scheduler.get_job(listed.name).metadata
                for meta in (listed.metadata, fresh):
                    self._check_metadata(instance.name, job, meta)

    def _check_metadata(self, instance: str, job: JobModel, meta: Any) -> None:
        where = f"{instance}: {job.spec.name!r}"
        expected = self.expected_status(job, instance)
        assert meta.status is expected, f"{where} is {meta.status}, the model says {expected}"
        assert meta.run_count == job.run_count, (
            f"{where}: run_count {meta.run_count}, the model counted {job.run_count}")
        assert meta.failure_count == job.failure_count, (
            f"{where}: failure_count {meta.failure_count}, the model counted "
            f"{job.failure_count}")
        if job.generation_fence is not None:
            assert meta.fencing_token == job.generation_fence, (
                f"{where}: fencing_token {meta.fencing_token}, last claimed "
                f"{job.generation_fence}")

    def check_store(self) -> None:
        """The store holds exactly the jobs the model says exist (without wipes)."""
        if self.wiped:
            return
        expected = sorted(name for name, job in self.jobs.items() if job.exists)
        assert sorted(self.group.observer.job_names()) == expected

    def active_jobs(self) -> list[JobModel]:
        """Jobs that should run: stored, not paused, and registered on a live instance."""
        local: set[str] = set()
        for instance in self.group.alive():
            local.update(self.group.local_jobs(instance))
        return [job for name, job in sorted(self.jobs.items())
                if job.exists and not job.paused and name in local]

    def quiet(self) -> bool:
        return all(job.occ is None and job.manual is None for job in self.active_jobs())

    def check_liveness(self, since_ms: int) -> None:
        """Nothing due by ``since_ms`` is left waiting, and nothing is stuck in flight."""
        jobs = self.active_jobs()
        states = self.group.observer.get_states([job.spec.name for job in jobs])
        for job, state in zip(jobs, states):
            name = job.spec.name
            assert state is not None, f"{name!r} is registered on a live instance, not stored"
            assert job.manual is None, f"{name!r}: run_now {job.manual} never ran"
            assert job.occ is None, f"{name!r}: occurrence {job.occ} never settled"
            assert state.occurrence_status == "", (
                f"{name!r}: still {state.occurrence_status} in the store")
            assert state.due_ms is None or state.due_ms > since_ms, (
                f"{name!r} was due at {state.due_ms} and had not run by {since_ms}")
