"""DistributedLock: leases kept alive, lost at their local deadline, and never lost twice.

The races here are staged with gates in the backend, not with timing: a refresh is held
inside its backend call while a finish goes through, or the other way round.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pyscheduler import BackendUnavailableError, IntervalSchedule, Job
from pyscheduler.backends.memory import MemoryBackend
from pyscheduler.clock import FakeClock

from .helpers import WAIT, MetricsRecorder, Recorder, Schedulers, lose_the_lease_of_a_run


class Gate:
    """Where a backend call stops until the test lets it through."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def pass_through(self) -> None:
        self.reached.set()
        assert self.opened.wait(WAIT), "the test never opened the gate"


class GatedBackend(MemoryBackend):
    """A memory backend whose refresh waits at a gate before it runs, and whose finishes wait
    at another after they were recorded (before the caller hears back)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.before_refresh: Gate | None = None
        self.after_finish: Gate | None = None

    def refresh(self, leases: Any, lease_ms: int) -> list[bool]:
        if self.before_refresh is not None:
            self.before_refresh.pass_through()
        return super().refresh(leases, lease_ms)

    def finish(self, outcomes: Any) -> Any:
        states = super().finish(outcomes)
        if self.after_finish is not None:
            self.after_finish.pass_through()
        return states

    def finish_and_claim(self, outcomes: Any, *args: Any) -> Any:
        result = super().finish_and_claim(outcomes, *args)
        if outcomes and self.after_finish is not None:
            self.after_finish.pass_through()
        return result


def running_scheduler(schedulers: Schedulers, clock: FakeClock, backend: MemoryBackend,
                      **config: Any):
    """A stepped scheduler with one long run in flight; returns it, its recorder, the run's
    release event and its metrics."""
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    metrics = MetricsRecorder()
    scheduler = schedulers.stepped(clock, backend, lock_ttl=3, lock_refresh_interval=1,
                                   metrics=metrics, **config)
    scheduler.register(Job("j", IntervalSchedule(100), recorder))
    scheduler.start(background=False)
    clock.advance(100)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)
    return scheduler, recorder, release, metrics


def refresh_held_at_gate(scheduler, backend: GatedBackend, clock: FakeClock):
    """Start a refresh (one interval on) on a thread of its own, and return once it waits
    at the gate before its backend call, holding its snapshot of the leases."""
    backend.before_refresh = gate = Gate()
    clock.advance(1)
    refresher = threading.Thread(target=scheduler.refresh_leases)
    refresher.start()
    assert gate.reached.wait(WAIT)
    return gate, refresher


def test_a_refresh_that_raced_the_runs_own_finish_loses_nothing(fake_clock, caplog, schedulers):
    clock = fake_clock
    # Given a refresh that took its snapshot of the held leases and is on its way
    backend = GatedBackend(clock)
    scheduler, recorder, release, metrics = running_scheduler(schedulers, clock, backend)
    gate, refresher = refresh_held_at_gate(scheduler, backend, clock)
    # When the run ends and its finish releases the lease before the refresh arrives
    release.set()
    assert scheduler.wait_idle(WAIT)
    gate.opened.set()
    refresher.join(WAIT)
    # Then the refresh finding the lease gone is no loss: no warning, no lock_lost
    assert "lock_lost" not in metrics.names()
    assert "lease lost" not in caplog.text
    assert not recorder.contexts[0].cancelled
    assert scheduler.get_job("j").metadata.run_count == 1


def test_a_refresh_during_the_finish_call_loses_nothing(fake_clock, caplog, schedulers):
    clock = fake_clock
    # Given a run whose finish is recorded by the backend but not yet answered
    backend = GatedBackend(clock)
    scheduler, recorder, release, metrics = running_scheduler(schedulers, clock, backend)
    backend.after_finish = gate = Gate()
    release.set()
    assert gate.reached.wait(WAIT)
    # When a refresh runs meanwhile (it finds the lease released)
    clock.advance(1)
    scheduler.refresh_leases()
    gate.opened.set()
    assert scheduler.wait_idle(WAIT)
    # Then that is no loss either
    assert "lock_lost" not in metrics.names()
    assert "lease lost" not in caplog.text
    scheduler.stop()


def test_a_lease_taken_over_while_the_refresh_was_on_its_way_is_lost(fake_clock, schedulers):
    clock = fake_clock
    # The counterpart: a run still going whose lease the backend no longer has is lost.
    backend = GatedBackend(clock)
    scheduler, recorder, release, metrics = running_scheduler(schedulers, clock, backend)
    gate, refresher = refresh_held_at_gate(scheduler, backend, clock)
    backend.interrupt([scheduler.executor.unfinished()[0].lease])  # as if taken over
    gate.opened.set()
    refresher.join(WAIT)
    assert recorder.contexts[0].cancelled
    assert metrics.names().count("lock_lost") == 1
    release.set()
    scheduler.stop()


class StuckRefreshBackend(MemoryBackend):
    """A backend whose refresh calls hang (a black-holed connection) until released."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.stuck = threading.Event()
        self.unstick = threading.Event()

    def refresh(self, leases: Any, lease_ms: int) -> list[bool]:
        self.stuck.set()
        self.unstick.wait(WAIT)
        return super().refresh(leases, lease_ms)


def test_the_local_deadline_cancels_while_a_refresh_call_hangs(fake_clock, schedulers):
    clock = fake_clock
    # Given a started scheduler (real refresher threads on a fake clock) with a run in flight
    backend = StuckRefreshBackend(clock)
    release = schedulers.event()
    recorder = Recorder(lambda ctx: ctx.token.event.wait(WAIT) and release.wait(WAIT))
    metrics = MetricsRecorder()
    scheduler = schedulers.stepped(clock, backend, lock_ttl=3, lock_refresh_interval=1,
                                   metrics=metrics)
    scheduler.register(Job("j", IntervalSchedule(100), recorder))
    scheduler.start()
    try:
        clock.advance(100)
        assert recorder.started.wait(WAIT)
        # When the refresher's call hangs in the backend
        clock.advance(1)
        assert backend.stuck.wait(WAIT)
        # Then the lease is lost at its local deadline, before the TTL is out, while the
        # refresh call is still hanging
        clock.advance(1.8)
        assert not recorder.contexts[0].cancelled
        clock.advance(0.2)  # 3 s after the claim: past the local deadline (3 s - 0.1 s)
        assert recorder.contexts[0].token.event.wait(WAIT)
        assert "no successful refresh" in recorder.contexts[0].cancel_reason
        assert not backend.unstick.is_set()
        assert metrics.names().count("lock_lost") == 1
    finally:
        backend.unstick.set()
        release.set()
        scheduler.stop()


def test_a_run_cancelled_for_its_lost_lease_is_recovered_not_recorded_failed(fake_clock,
                                                                           schedulers):
    # Given a run that stops when its token is cancelled (JobCancelled), and nobody else
    clock = fake_clock
    recorder = Recorder(lambda ctx: ctx.attempt == 1 and ctx.token.event.wait(WAIT)
                        and ctx.raise_if_cancelled())
    metrics = MetricsRecorder()
    scheduler = schedulers.stepped(clock, MemoryBackend(clock), lock_ttl=3,
                                   lock_refresh_interval=1, metrics=metrics)
    # When its lease is lost (no refresh got through) and it stops
    lose_the_lease_of_a_run(scheduler, clock, "j", recorder)
    assert scheduler.wait_idle(WAIT)
    # Then that is no failure of the job's: nothing is recorded...
    meta = scheduler.get_job("j").metadata
    assert meta.failure_count == 0 and meta.last_error == ""
    assert "job_failed" not in metrics.names()
    # ...and once the lease has run out, the occurrence is recovered as attempt 2
    scheduler.run_pending()
    assert scheduler.wait_idle(WAIT)
    (_, first_at, _, first_fence, _), (_, at, attempt, fence, kind) = recorder.calls
    assert (at, attempt, kind) == (first_at, 2, "recovery") and fence > first_fence


class LostReplyBackend(MemoryBackend):
    """A backend whose next claim call goes through but whose answer never arrives."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.lose_next_reply = False

    def claim(self, instance_id: str, requests: Any, lease_ms: int, peek: int) -> Any:
        batch = super().claim(instance_id, requests, lease_ms, peek)
        if requests and self.lose_next_reply:
            self.lose_next_reply = False
            raise BackendUnavailableError("the connection was reset before the reply")
        return batch


def test_a_claim_whose_reply_was_lost_is_sent_again_and_starts_at_once(fake_clock, schedulers):
    # Given a due job, and a claim call that goes through but whose answer is lost
    clock = fake_clock
    backend = LostReplyBackend(clock)
    recorder = Recorder()
    scheduler = schedulers.stepped(clock, backend, lock_ttl=30, lock_refresh_interval=10)
    scheduler.register(Job("j", IntervalSchedule(100), recorder))
    scheduler.start(background=False)
    clock.advance(100)
    backend.lose_next_reply = True
    with pytest.raises(BackendUnavailableError):
        scheduler.run_pending()
    # When the next tick comes (no lease has run out)
    clock.advance(1)
    scheduler.run_pending()
    assert scheduler.wait_idle(WAIT)
    # Then the same claim is sent again, answered with the original claim, and the
    # occurrence runs now as its first attempt, not a lease later as a recovery
    ((_, at, attempt, _, kind),) = recorder.calls
    assert (attempt, kind) == (1, "regular")
    assert scheduler.get_job("j").metadata.run_count == 1
