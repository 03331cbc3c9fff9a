"""The checker on synthetic histories: each rule passes a good history and fails a bad one."""

from __future__ import annotations

from typing import Any

import pytest

from .checker import Fault, Gap, Scenario, check
from .spec import JobSpec

pytestmark = pytest.mark.faults

T0 = 1_000.0  # wall seconds of the first occurrence
M0 = 50.0  # the monotonic time at T0
TTL = 2.0
EVERY = 1.0
JOBS = [JobSpec("j", count=1, every=EVERY, start_at=T0)]


class History:
    """Builds instance events and sink writes the way the instances and the sink do."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.sink: list[dict[str, Any]] = []
        self._fence = 100

    def add(self, event: str, instance: str, at: float, **fields: Any) -> None:
        self.events.append(dict(event=event, instance=instance, pid=1, mono=M0 + at,
                                wall=T0 + at, **fields))

    def ready(self, *instances: str) -> History:
        for name in instances:
            self.add("ready", name, -1.0)
            self.add("stopped", name, 30.0, still_running=[], threads=[])
        return self

    def run(self, instance: str, k: int, *, delay: float = 0.01, length: float = 0.1,
            attempt: int = 1, kind: str = "regular", fence: int | None = None,
            outcome: str | None = "ok", commit: bool | None = True, job: str = "j-0",
            refreshes: tuple[float, ...] = (), recorded: bool = True) -> int:
        """A run of occurrence ``k`` starting ``delay`` after it; returns its fence."""
        if fence is None:
            self._fence += 1
            fence = self._fence
        ms = round((T0 + k * EVERY) * 1000)
        start = k * EVERY + delay
        self.add("claim", instance, start - 0.005, sent=M0 + start - 0.005,
                 done=M0 + start - 0.002, claims=[[job, ms, fence, attempt, kind,
                                                   round((T0 + start - 0.004) * 1000)]],
                 finished=[])
        run = {"job": job, "scheduled_ms": ms, "attempt": attempt, "kind": kind, "fence": fence}
        self.add("start", instance, start, **run)
        self._write("begin", instance, run, True)
        for at in refreshes:
            self.add("refresh", instance, start + at, sent=M0 + start + at,
                     done=M0 + start + at + 0.001, leases=[[job, fence, True]])
        if outcome is not None:
            self.add("finish", instance, start + length, outcome=outcome, **run)
            if commit is not None:
                self._write("commit", instance, run, commit)
        if outcome is not None and recorded:
            self.add("finish_call", instance, start + length + 0.001,
                     sent=M0 + start + length + 0.001, finished=[[job, fence, True]])
        return fence

    def _write(self, phase: str, instance: str, run: dict[str, Any], accepted: bool) -> None:
        self.sink.append({"phase": phase, "job": run["job"], "fence": run["fence"],
                              "scheduled_ms": run["scheduled_ms"], "attempt": run["attempt"],
                              "instance": instance, "accepted": accepted, "t": 0.0})

    def check(self, **options: Any) -> list[str]:
        options.setdefault("window", (T0, T0 + 4 * EVERY))
        scenario = Scenario(jobs=JOBS, lock_ttl=TTL, **options)
        return check(self.events, self.sink, scenario)


def healthy(*, skip: int | None = None) -> History:
    history = History().ready("a", "b")
    for k in range(5):
        if k != skip:
            history.run("ab"[k % 2], k)
    return history


def fault(kind: str, start: float, end: float, *instances: str, **flags: Any) -> Fault:
    return Fault(kind, M0 + start, M0 + end, T0 + start, T0 + end, instances, **flags)


def rules(violations: list[str]) -> set[str]:
    return {v.split(":", 1)[0] for v in violations}


def test_a_healthy_history_passes():
    assert healthy().check() == []


def test_two_accepted_completions_of_one_occurrence_fail_unless_the_first_was_lost():
    # Given a run that committed but whose outcome was never recorded, re-run later
    history = healthy(skip=4)
    history.run("a", 4, recorded=False)
    history.run("b", 4, delay=2.5, kind="recovery", attempt=2)
    # Then without a fault two accepted completions are one too many
    assert "accepted-once" in rules(history.check())
    # and with the first holder killed before it recorded its outcome, they are expected
    killed = [fault("kill", 4.2, 4.2, "a", kills=True)]
    assert history.check(faults=killed) == []


def test_a_second_start_fails_without_a_fault_and_passes_with_one():
    history = healthy()
    history.run("b", 2, delay=0.3, length=0.05, commit=False)
    assert "duplicate" in rules(history.check())
    # a kill of the first holder while it ran explains it
    assert "duplicate" not in rules(history.check(faults=[fault("kill", 2.05, 2.05, "a",
                                                                kills=True)]))
    # a fault shorter than the lease does not
    short = [fault("sigstop", 2.0, 2.5, "a", freezes=True, explains=False)]
    assert "duplicate" in rules(history.check(faults=short))


def test_a_retry_after_a_failed_attempt_is_no_duplicate():
    history = History().ready("a")
    history.run("a", 0, outcome="failed", commit=None)
    history.run("a", 0, delay=0.5, attempt=2, kind="retry")
    assert history.check(window=(T0, T0)) == []


def test_a_begin_the_sink_rejected_fails_unless_explained():
    history = healthy()
    history.sink[2]["accepted"] = False  # the second run's begin
    assert rules(history.check()) == {"stale-begin"}
    faulted = [fault("partition-late", 0.5, 4.0, "b")]
    assert "stale-begin" not in rules(history.check(faults=faulted))


def test_a_missed_occurrence_fails_coverage_unless_in_a_gap():
    assert rules(healthy(skip=2).check()) == {"coverage"}
    gap = Gap(T0 + 1.5, T0 + 2.5)
    assert healthy(skip=2).check(gaps=[gap]) == []


def test_a_coalescing_gap_allows_one_catch_up_run_not_a_burst():
    history = History().ready("a")
    history.run("a", 0)
    history.run("a", 3, delay=0.2)
    assert history.check(window=(T0, T0), gaps=[Gap(T0 + 0.5, T0 + 3.5, coalesce=True)]) == []
    history.run("a", 2, delay=1.3)
    found = history.check(window=(T0, T0), gaps=[Gap(T0 + 0.5, T0 + 3.5, coalesce=True)])
    assert rules(found) == {"coverage"}


def test_a_fence_going_down_in_claim_order_fails():
    history = History().ready("a", "b")
    history.run("a", 0, fence=200)
    history.run("b", 1, fence=150)
    assert "fence" in rules(history.check(window=(T0, T0 + 1)))


def test_one_fence_run_by_two_instances_fails():
    history = History().ready("a", "b")
    history.run("a", 0, fence=200)
    history.run("b", 0, fence=200, delay=0.4, commit=False)
    assert "fence" in rules(history.check(window=(T0, T0),
                                          faults=[fault("kill", 0.1, 0.1, "a")]))


def test_overlapping_runs_fail_unless_a_fault_explains_them():
    history = History().ready("a", "b")
    history.run("a", 0, length=1.5, refreshes=(0.5, 1.0))
    history.run("b", 1, delay=0.1)
    assert rules(history.check(window=(T0, T0 + 1))) == {"overlap"}
    explained = [fault("latency", 0.0, 3.0, "a")]
    assert "overlap" not in rules(history.check(window=(T0, T0 + 1), faults=explained))


def test_a_retry_while_the_timed_out_attempt_still_runs_is_an_overlap():
    history = History().ready("a", "b")
    history.run("a", 0, length=1.5, outcome="failed", commit=None, refreshes=(0.5, 1.0))
    history.run("b", 0, delay=1.0, attempt=2, kind="retry")
    assert rules(history.check(window=(T0, T0))) == {"overlap"}


def test_an_early_start_fails():
    history = History().ready("a")
    history.run("a", 0, delay=-0.2)
    assert rules(history.check(window=(T0, T0))) == {"early"}


def test_a_p99_lag_over_the_bound_fails():
    history = History().ready("a")
    history.run("a", 0, delay=0.01)
    history.run("a", 1, delay=0.9)
    assert history.check(window=(T0, T0 + 1), lag_bound=1.0) == []
    assert rules(history.check(window=(T0, T0 + 1), lag_bound=0.5)) == {"lag"}


def test_holding_a_lease_past_its_ttl_without_a_refresh_fails():
    # Given a run refreshed at +0.5 s that is cut off from Redis and cancelled 4.5 s later
    history = History().ready("a")
    history.run("a", 0, length=5.0, outcome="cancelled", commit=None, refreshes=(0.5,))
    history.add("log", "a", 5.0, level="warning", msg="lease lost; the run is cancelled",
                fields={"job": "j-0", "fence": 101})
    cut_off = [fault("partition-late", 0.6, 6.0, "a")]
    # Then it held the lease past send + ttl: the known bug of a late cancellation
    assert rules(history.check(window=(T0, T0), faults=cut_off)) == {"deadline"}
    # and a cancellation at its local deadline passes
    history.events[-1]["mono"] = M0 + 0.51 + TTL - 0.05
    assert history.check(window=(T0, T0), faults=cut_off) == []


def test_a_frozen_process_may_cancel_once_it_thaws():
    history = History().ready("a")
    history.run("a", 0, length=4.1, outcome="cancelled", commit=None, refreshes=(0.5,))
    history.add("log", "a", 4.05, level="warning", msg="lease lost; the run is cancelled",
                fields={"job": "j-0", "fence": 101})
    frozen = [fault("sigstop", 0.7, 4.0, "a", freezes=True)]
    assert history.check(window=(T0, T0), faults=frozen) == []
    assert "deadline" in rules(history.check(window=(T0, T0),
                                             faults=[fault("partition-late", 0.7, 4.0, "a")]))


def test_any_warning_in_a_fault_free_scenario_fails():
    history = healthy()
    history.add("log", "a", 2.0, level="warning", msg="lease lost; the run is cancelled",
                fields={"job": "j-0", "fence": 999})
    assert rules(history.check()) == {"warning"}


def test_lease_warnings_need_a_lease_outlasting_fault_on_their_instance():
    history = healthy()
    history.add("log", "b", 2.0, level="warning", msg="stale completion dropped",
                fields={"job": "j-0", "fence": 999})
    on_a = [fault("partition-late", 1.0, 4.0, "a")]
    assert rules(history.check(faults=on_a)) == {"warning"}
    on_b = [fault("partition-late", 1.0, 4.0, "b")]
    assert history.check(faults=on_b) == []
    quiet = [fault("sigstop", 1.0, 1.5, "b", explains=False)]
    assert rules(history.check(faults=quiet)) == {"warning"}


def test_leases_running_jobs_threads_and_unfinished_runs_left_after_stop_fail():
    assert rules(healthy().check(leftover_leases=["{faults}:lease:j-0"])) == {"leftover"}
    assert rules(healthy().check(running_jobs=["j-0"])) == {"leftover"}
    history = healthy()
    history.events[1]["threads"] = ["pyscheduler-worker_0"]
    assert rules(history.check()) == {"leftover"}
    history = healthy(skip=4)
    history.run("a", 4, outcome=None)
    assert "leftover" in rules(history.check())


def test_occurrences_due_while_an_orphan_holds_its_job_coalesce():
    def history(burst: bool) -> History:
        # a run killed mid-way at +0.5 s, recovered at +2.6 s once its lease ran out
        built = History().ready("a", "b")
        built.run("a", 0, outcome=None)
        built.run("b", 0, delay=2.6, length=0.05, attempt=2, kind="recovery")
        built.run("b", 2, delay=0.71, length=0.05)  # the latest one due meanwhile
        if burst:
            built.run("b", 1, delay=1.81, length=0.05)
        built.run("b", 3)
        return built

    killed = [fault("kill", 0.5, 0.5, "a", kills=True)]
    # The occurrences due meanwhile may be missing, but not run as a burst
    assert history(burst=False).check(window=(T0, T0 + 3), faults=killed) == []
    assert rules(history(burst=True).check(window=(T0, T0 + 3), faults=killed)) == {"coverage"}


def test_a_frozen_holder_starting_late_overlaps_the_takeover_by_its_own_fault():
    # Given a takeover on b, and a's run of the same job, claimed before a froze, whose
    # start line only made it out after the thaw, during the takeover
    history = History().ready("a", "b")
    history.run("b", 0, delay=2.5, length=0.2, attempt=2, kind="recovery")
    history.run("a", 0, delay=2.6, length=0.05, commit=False, fence=100)
    (claim,) = [e for e in history.events if e["event"] == "claim" and e["instance"] == "a"]
    claim["claims"][0][5] = round((T0 + 0.05) * 1000)  # claimed before a froze
    assert "overlap" in rules(history.check(window=(T0, T0)))
    frozen = [fault("sigstop", 0.1, 2.55, "a", freezes=True)]
    assert "overlap" not in rules(history.check(window=(T0, T0), faults=frozen))


def test_a_result_sent_before_its_instance_froze_released_the_job_then():
    # Given a's run whose result was sent before a froze, though the call's event only made
    # it out after the thaw, and b running the next occurrences meanwhile
    history = History().ready("a", "b")
    fence = history.run("a", 0, recorded=False)
    history.add("finish_call", "a", 3.5, sent=M0 + 0.111, finished=[["j-0", fence, True]])
    for k in (1, 2, 3):
        history.run("b", k)
    frozen = [fault("gil", 0.2, 3.4, "a", freezes=True)]
    # Then those are not occurrences run while the job could not run
    assert history.check(window=(T0, T0 + 3), faults=frozen) == []


def test_an_occurrence_missed_while_its_owner_was_down_passes_only_within_two_takeover_delays():
    # Occurrence 1 (at +1 s) never ran; an instance was killed at +0.5 s
    killed_soon = [fault("kill", 0.5, 0.5, "a", kills=True)]
    assert healthy(skip=1).check(faults=killed_soon) == []
    # killed long before: its jobs had changed owner by then
    killed_early = [fault("kill", -3.0, -3.0, "a", kills=True)]
    assert rules(healthy(skip=1).check(faults=killed_early)) == {"coverage"}
