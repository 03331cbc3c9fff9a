"""The Backend contract (pyscheduler.backends.base), run against every backend.

Times come from the backend's own clock (``backend.now_ms()``): jobs are registered already
due, and a lease runs out through ``driver.advance_past`` (the fake clock for memory, a short
real wait for Redis). Nothing here waits on a schedule.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Optional

import pytest

from pyscheduler.backends.base import (
    GROUP_HISTORY_LIMIT,
    HISTORY_ERROR_BYTES,
    Claim,
    ClaimBatch,
    ClaimRequest,
    DueEntry,
    InstanceInfo,
    JobDefinition,
    JobState,
    Lease,
    OccurrenceKind,
    Outcome,
    RunOutcome,
    RunRecord,
)
from pyscheduler.backends.claim_rules import ABANDONED_ERROR

LONG = 60_000  # a lease no test outlives
SHORT = 100  # a lease a test lets run out
HOUR = 3_600_000


# -- helpers ----------------------------------------------------------------------------------


def register_due(backend, name: str = "job", ago: int = 1_000, **kwargs) -> JobState:
    """Register a job whose first run was ``ago`` ms before the backend's now."""
    (state,) = backend.register([JobDefinition(name, backend.now_ms() - ago, **kwargs)])
    return state


def regular(state: JobState, owner: str = "owner-1", *, scheduled: Optional[int] = None,
            following: Optional[int] = None, **kwargs) -> ClaimRequest:
    """A request for the job's next regular run (the following one an hour later)."""
    assert state.next_run_ms is not None and state.due_ms is not None
    scheduled = state.next_run_ms if scheduled is None else scheduled
    return ClaimRequest(
        job_name=state.name, owner=owner, expected_due_ms=state.due_ms,
        expected_next_run_ms=state.next_run_ms, scheduled_ms=scheduled,
        following_ms=scheduled + HOUR if following is None else following, **kwargs)


def again(backend, name: str, owner: str, **kwargs) -> ClaimRequest:
    """A request for whatever is due now (retry, recovery, run_now), from the stored state."""
    (state,) = backend.get_states([name])
    return ClaimRequest(name, owner, state.due_ms, state.next_run_ms, None, None, **kwargs)


def claim(backend, *requests: ClaimRequest, lease_ms: int = LONG, peek: int = 0) -> ClaimBatch:
    return backend.claim("instance", list(requests), lease_ms, peek)


def claim_one(backend, request: ClaimRequest, lease_ms: int = LONG) -> Claim:
    batch = claim(backend, request, lease_ms=lease_ms)
    assert len(batch.claims) == 1, batch
    return batch.claims[0]


def lease_of(claimed: Claim) -> Lease:
    return Lease(claimed.job_name, claimed.owner, claimed.fence)


def state_of(backend, name: str = "job") -> JobState:
    (state,) = backend.get_states([name])
    assert state is not None
    return state


# -- register ---------------------------------------------------------------------------------


def test_register_creates_the_job(backend):
    # Given / When a new job
    first = backend.now_ms() + HOUR
    (state,) = backend.register([JobDefinition("a", first, {"schedule": "every 1h", "v": 1})])
    # Then it is stored, due at its first run
    assert state == JobState(name="a", next_run_ms=first, due_ms=first, paused=False, fence=0,
                             description={"schedule": "every 1h", "v": 1})
    assert backend.get_states(["a"]) == [state]
    assert backend.job_names() == ["a"]


def test_register_without_a_first_run_is_never_due(backend):
    (state,) = backend.register([JobDefinition("done", None)])
    assert state.next_run_ms is None and state.due_ms is None


def test_register_keeps_existing_state_but_updates_the_description(backend):
    # Given a paused job that ran once
    state = register_due(backend, description={"v": 1})
    backend.finish([Outcome(lease_of(claim_one(backend, regular(state))), True)])
    backend.pause("job")
    before = state_of(backend)
    # When it is registered again with another first run and description
    (after,) = backend.register([JobDefinition("job", backend.now_ms(), {"v": 2})])
    # Then only the description changed
    assert after.description == {"v": 2}
    assert after.paused and after.run_count == 1
    assert after.next_run_ms == before.next_run_ms and after.fence == before.fence
    assert state_of(backend) == after


def test_start_paused_applies_to_new_jobs_only(backend):
    now = backend.now_ms()
    backend.register([JobDefinition("running", now)])
    states = backend.register([JobDefinition("new", now, start_paused=True),
                               JobDefinition("running", now, start_paused=True)])
    assert [(s.name, s.paused, s.due_ms) for s in states] == [
        ("new", True, None), ("running", False, now)]


def test_register_clears_a_tombstone(backend):
    # Given a removed job
    state = register_due(backend)
    assert backend.remove("job")
    assert claim(backend, regular(state)).refused == [
        DueEntry("job", None, None, missing=True, removed=True)]
    # When it is registered again
    state = register_due(backend)
    # Then it starts afresh and can be claimed
    assert state.fence == 0 and state.run_count == 0
    assert claim_one(backend, regular(state)).kind == OccurrenceKind.REGULAR


def test_register_many_in_one_call(backend):
    now = backend.now_ms()
    states = backend.register([JobDefinition(f"j{i}", now + i) for i in range(50)])
    assert [s.next_run_ms for s in states] == [now + i for i in range(50)]
    assert backend.job_names() == sorted(f"j{i}" for i in range(50))


# -- claim ------------------------------------------------------------------------------------


def test_claim_takes_the_occurrence(backend):
    # Given a due job
    state = register_due(backend)
    request = regular(state)
    # When it is claimed
    batch = claim(backend, request, lease_ms=LONG)
    # Then the claim holds the occurrence under a fresh fence, and the job moved on
    (claimed,) = batch.claims
    assert claimed == Claim("job", "owner-1", claimed.fence, state.next_run_ms, 1,
                            OccurrenceKind.REGULAR, batch.now_ms, LONG)
    assert claimed.fence >= batch.now_ms * 1000 > 0
    assert batch.refused == [] and batch.skipped == [] and batch.abandoned == []
    after = state_of(backend)
    assert after.next_run_ms == request.following_ms
    assert after.due_ms == batch.now_ms + LONG  # the lease's expiry
    assert after.fence == claimed.fence
    assert (after.occurrence_status, after.occurrence_scheduled_ms, after.occurrence_attempt) \
        == ("running", state.next_run_ms, 1)


def test_fences_strictly_increase(backend):
    state = register_due(backend, ago=10_000)
    fences = []
    for i in range(3):
        scheduled = state.next_run_ms
        claimed = claim_one(backend, regular(state, f"o{i}", following=scheduled + 1_000))
        fences.append(claimed.fence)
        (state,) = backend.finish([Outcome(lease_of(claimed), True)])
    assert fences == sorted(set(fences))


def test_a_second_claim_of_the_same_occurrence_is_refused(backend):
    state = register_due(backend)
    first = claim(backend, regular(state, "first"))
    second = claim(backend, regular(state, "second"))
    assert len(first.claims) == 1 and second.claims == []
    assert second.refused == [DueEntry("job", first.now_ms + LONG, state.next_run_ms + HOUR)]


def test_a_stale_expected_due_time_is_refused(backend):
    state = register_due(backend)
    request = regular(state)
    stale = ClaimRequest("job", "o", state.due_ms - 1, state.next_run_ms,
                         request.scheduled_ms, request.following_ms)
    batch = claim(backend, stale)
    assert batch.claims == []
    assert batch.refused == [DueEntry("job", state.due_ms, state.next_run_ms)]
    assert state_of(backend) == state


def test_a_job_not_yet_due_is_refused(backend):
    (state,) = backend.register([JobDefinition("job", backend.now_ms() + HOUR)])
    batch = claim(backend, regular(state))
    assert batch.claims == [] and batch.refused == [
        DueEntry("job", state.due_ms, state.next_run_ms)]


def test_a_paused_job_is_refused(backend):
    state = register_due(backend)
    assert backend.pause("job") == DueEntry("job", None, state.next_run_ms)
    batch = claim(backend, regular(state))
    assert batch.claims == [] and batch.refused == [DueEntry("job", None, state.next_run_ms)]


def test_an_unknown_job_is_missing(backend):
    batch = claim(backend, ClaimRequest("ghost", "o", 1, 1, 1, 2))
    assert batch.refused == [DueEntry("ghost", None, None, missing=True, removed=False)]


def test_a_removed_job_is_missing_and_removed(backend):
    state = register_due(backend)
    assert backend.remove("job")
    assert claim(backend, regular(state)).refused == [
        DueEntry("job", None, None, missing=True, removed=True)]


@pytest.mark.parametrize("case", ["scheduled later than now", "following not after scheduled",
                                  "scheduled before the next run", "another next run"])
def test_an_inconsistent_regular_request_is_refused(backend, case):
    state = register_due(backend)
    now = backend.now_ms()
    request = {
        "scheduled later than now": regular(state, scheduled=now + HOUR),
        "following not after scheduled": regular(state, following=state.next_run_ms),
        "scheduled before the next run": regular(state, scheduled=state.next_run_ms - 1),
        "another next run": ClaimRequest("job", "o", state.due_ms, state.next_run_ms - 5,
                                         state.next_run_ms, state.next_run_ms + HOUR),
    }[case]
    batch = claim(backend, request)
    assert batch.claims == []
    assert batch.refused == [DueEntry("job", state.due_ms, state.next_run_ms)]
    assert state_of(backend) == state


def test_a_misfired_occurrence_is_skipped(backend):
    # Given a job whose run is 10 s late, with a grace of 1 s
    state = register_due(backend, ago=10_000)
    # When it is claimed
    request = regular(state, misfire_grace_ms=1_000)
    batch = claim(backend, request)
    # Then the occurrence is skipped and the job moves on to the following one
    assert batch.claims == [] and batch.skipped == ["job"]
    assert batch.refused == [DueEntry("job", request.following_ms, request.following_ms)]
    after = state_of(backend)
    assert after.fence == 0 and after.run_count == 0 and after.occurrence_status == ""


def test_a_late_occurrence_within_grace_runs(backend):
    state = register_due(backend, ago=500)
    assert claim_one(backend, regular(state, misfire_grace_ms=60_000)).attempt == 1


def test_a_resent_claim_returns_the_original_claim(backend):
    # Given a claim whose reply was lost
    state = register_due(backend)
    request = regular(state)
    first = claim_one(backend, request)
    fence = state_of(backend).fence
    # When the same request is sent again
    second = claim_one(backend, request)
    # Then the answer is the same claim, and the fence was not bumped again
    assert second == first
    assert state_of(backend).fence == fence == first.fence


def test_peek_reports_other_due_jobs(backend):
    # Given three due jobs and one not yet due
    now = backend.now_ms()
    states = backend.register([JobDefinition("a", now - 3_000), JobDefinition("b", now - 2_000),
                               JobDefinition("c", now - 1_000),
                               JobDefinition("later", now + HOUR)])
    # When one is claimed with room to peek
    batch = claim(backend, regular(states[0]), peek=5)
    # Then the others due are reported, in due order, without the one asked for
    assert batch.due == [DueEntry("b", now - 2_000, now - 2_000),
                         DueEntry("c", now - 1_000, now - 1_000)]
    assert claim(backend, peek=1).due == [DueEntry("b", now - 2_000, now - 2_000)]
    assert claim(backend, peek=0).due == []


def test_peek_skips_requested_jobs_even_when_refused(backend):
    now = backend.now_ms()
    a, b = backend.register([JobDefinition("a", now - 2_000), JobDefinition("b", now - 1_000)])
    stale = ClaimRequest("a", "o", 1, a.next_run_ms, a.next_run_ms, a.next_run_ms + HOUR)
    batch = claim(backend, stale, peek=1)
    assert batch.refused == [DueEntry("a", a.due_ms, a.next_run_ms)]
    assert batch.due == [DueEntry("b", b.due_ms, b.next_run_ms)]


def test_one_batch_claims_each_request_on_its_own(backend):
    now = backend.now_ms()
    due, paused, later = backend.register([
        JobDefinition("due", now - 1_000), JobDefinition("paused", now - 1_000),
        JobDefinition("later", now + HOUR)])
    backend.pause("paused")
    batch = claim(backend, regular(due), regular(paused), regular(later),
                  ClaimRequest("ghost", "o", 1, 1, 1, 2))
    assert [c.job_name for c in batch.claims] == ["due"]
    assert [(e.name, e.missing) for e in batch.refused] == [
        ("paused", False), ("later", False), ("ghost", True)]


# -- retries and recovery ---------------------------------------------------------------------


def test_a_failed_attempt_is_retried_by_any_instance(backend):
    # Given a claimed occurrence
    state = register_due(backend)
    first = claim_one(backend, regular(state))
    # When it fails with a retry asked for at once
    (after,) = backend.finish([Outcome(lease_of(first), False, "boom", 0.25, retry_delay_ms=0)])
    # Then it waits for its retry, due now
    assert after.occurrence_status == "retry_wait" and after.due_ms <= backend.now_ms()
    assert after.run_count == 1 and after.failure_count == 0 and after.last_error == "boom"
    # And the retry is the same occurrence, attempt 2, under a higher fence
    retry = claim_one(backend, again(backend, "job", "owner-2"))
    assert (retry.kind, retry.scheduled_ms, retry.attempt) == (
        OccurrenceKind.RETRY, first.scheduled_ms, 2)
    assert retry.fence > first.fence


def test_a_retry_waits_for_its_delay(backend):
    state = register_due(backend)
    first = claim_one(backend, regular(state))
    (after,) = backend.finish([Outcome(lease_of(first), False, "boom",
                                       retry_delay_ms=HOUR)])
    assert after.due_ms >= backend.now_ms() + HOUR - 1_000
    batch = claim(backend, again(backend, "job", "owner-2"))
    assert batch.claims == [] and batch.refused == [
        DueEntry("job", after.due_ms, after.next_run_ms)]


def test_an_orphan_is_recovered_after_its_lease_ran_out(backend, driver):
    # Given a holder that stopped refreshing
    state = register_due(backend)
    lost = claim_one(backend, regular(state, "lost"), lease_ms=SHORT)
    # When its lease runs out and another instance claims
    driver.pass_instant(state_of(backend).due_ms)
    recovered = claim_one(backend, again(backend, "job", "rescuer"))
    # Then it recovers the same occurrence as attempt 2, under a higher fence
    assert (recovered.kind, recovered.scheduled_ms, recovered.attempt) == (
        OccurrenceKind.RECOVERY, lost.scheduled_ms, 2)
    assert recovered.fence > lost.fence
    # And the old holder's late finish is rejected and changes nothing
    before = state_of(backend)
    assert backend.finish([Outcome(lease_of(lost), True)]) == [None]
    assert backend.refresh([lease_of(lost)], LONG) == [False]
    assert backend.interrupt([lease_of(lost)]) == [False]
    assert state_of(backend) == before


def test_a_running_occurrence_is_not_recovered_while_its_lease_lives(backend):
    state = register_due(backend)
    claim_one(backend, regular(state, "holder"))
    batch = claim(backend, again(backend, "job", "rescuer"))
    assert batch.claims == [] and batch.refused[0].due_ms == state_of(backend).due_ms


def test_an_orphan_is_abandoned_once_recoveries_are_exhausted(backend, driver):
    # Given an occurrence already recovered once, with one recovery allowed
    state = register_due(backend)
    claim_one(backend, regular(state, "first", max_recoveries=1), lease_ms=SHORT)
    driver.pass_instant(state_of(backend).due_ms)
    claim_one(backend, again(backend, "job", "second", max_recoveries=1), lease_ms=SHORT)
    driver.pass_instant(state_of(backend).due_ms)
    # When its lease runs out again
    batch = claim(backend, again(backend, "job", "third", max_recoveries=1))
    # Then it is abandoned as failed, and the job waits for its next regular run
    assert batch.claims == [] and batch.abandoned == ["job"]
    after = state_of(backend)
    assert batch.refused == [DueEntry("job", after.next_run_ms, after.next_run_ms)]
    assert after.next_run_ms == state.next_run_ms + HOUR
    assert after.occurrence_status == "" and after.last_failed
    assert after.failure_count == 1 and after.consecutive_failures == 1
    assert after.run_count == 0 and "abandoned" in after.last_error


def test_without_recovery_an_orphan_is_abandoned_at_once(backend, driver):
    state = register_due(backend)
    claim_one(backend, regular(state, max_recoveries=0), lease_ms=SHORT)
    driver.pass_instant(state_of(backend).due_ms)
    batch = claim(backend, again(backend, "job", "rescuer", max_recoveries=0))
    assert batch.claims == [] and batch.abandoned == ["job"]
    assert state_of(backend).failure_count == 1


def test_an_interrupted_occurrence_is_recoverable_at_once(backend):
    # Given a running occurrence with a long lease
    state = register_due(backend)
    held = claim_one(backend, regular(state, "stopping"))
    # When its holder shuts down
    assert backend.interrupt([lease_of(held), Lease("job", "other", held.fence)]) == [True, False]
    # Then it is due now, and another instance recovers it without waiting for the lease
    after = state_of(backend)
    assert after.occurrence_status == "interrupted" and after.due_ms <= backend.now_ms()
    assert backend.refresh([lease_of(held)], LONG) == [False]
    assert backend.finish([Outcome(lease_of(held), True)]) == [None]
    recovered = claim_one(backend, again(backend, "job", "rescuer"))
    assert (recovered.kind, recovered.attempt) == (OccurrenceKind.RECOVERY, 2)


def test_a_finish_after_the_lease_ran_out_is_accepted_if_nobody_took_over(backend, driver):
    state = register_due(backend)
    held = claim_one(backend, regular(state), lease_ms=SHORT)
    driver.pass_instant(state_of(backend).due_ms)
    (after,) = backend.finish([Outcome(lease_of(held), True, duration=1.5)])
    assert after is not None
    assert after.run_count == 1 and after.occurrence_status == "" and after.last_duration == 1.5


# -- refresh ----------------------------------------------------------------------------------


def test_refresh_keeps_held_leases_and_reports_each(backend):
    now = backend.now_ms()
    a, b = backend.register([JobDefinition("a", now - 1_000), JobDefinition("b", now - 1_000)])
    held_a = claim_one(backend, regular(a))
    held_b = claim_one(backend, regular(b))
    before = backend.now_ms()
    assert backend.refresh([lease_of(held_a), Lease("b", held_b.owner, held_b.fence - 1),
                            Lease("b", "stranger", held_b.fence), Lease("ghost", "o", 1)],
                           LONG) == [True, False, False, False]
    assert before + LONG <= state_of(backend, "a").due_ms <= backend.now_ms() + LONG


def test_refresh_sets_the_lease_rather_than_extending_it(backend):
    state = register_due(backend)
    held = claim_one(backend, regular(state), lease_ms=LONG)
    assert backend.refresh([lease_of(held)], 5_000) == [True]
    assert state_of(backend).due_ms <= backend.now_ms() + 5_000


def test_refresh_never_revives_a_lease_that_ran_out(backend, driver):
    state = register_due(backend)
    held = claim_one(backend, regular(state), lease_ms=SHORT)
    expired = state_of(backend)
    driver.pass_instant(expired.due_ms)
    assert backend.refresh([lease_of(held)], LONG) == [False]
    assert state_of(backend) == expired


def test_refresh_of_nothing(backend):
    assert backend.refresh([], LONG) == []
    assert backend.finish([]) == []
    assert backend.interrupt([]) == []
    assert backend.get_states([]) == []


# -- run_now, pause, resume, remove -----------------------------------------------------------


def test_run_now_is_claimed_as_a_manual_run(backend):
    # Given a job next due in an hour
    (state,) = backend.register([JobDefinition("job", backend.now_ms() + HOUR)])
    # When a run is asked for now
    entry = backend.run_now("job")
    assert entry is not None and entry.due_ms <= backend.now_ms()
    assert entry.next_run_ms == state.next_run_ms
    assert backend.run_now("job") == entry  # a pending request is kept, not moved
    # Then it is claimed as a manual run, leaving the schedule alone
    manual = claim_one(backend, again(backend, "job", "o"))
    assert (manual.kind, manual.attempt, manual.scheduled_ms) == (
        OccurrenceKind.MANUAL, 1, entry.due_ms)
    (after,) = backend.finish([Outcome(lease_of(manual), True)])
    assert after.next_run_ms == state.next_run_ms and after.due_ms == state.next_run_ms


def test_run_now_while_running_is_claimed_after_the_finish(backend):
    state = register_due(backend)
    held = claim_one(backend, regular(state))
    entry = backend.run_now("job")
    assert entry == DueEntry("job", state_of(backend).due_ms, state.next_run_ms + HOUR)
    (after,) = backend.finish([Outcome(lease_of(held), True)])
    assert after.due_ms <= backend.now_ms()
    assert claim_one(backend, again(backend, "job", "o2")).kind == OccurrenceKind.MANUAL


def test_unknown_jobs_in_management_calls(backend):
    ghost = DueEntry("ghost", None, None, missing=True, removed=False)
    assert backend.run_now("ghost") == ghost
    assert backend.pause("ghost") == ghost
    assert backend.resume("ghost") == ghost
    assert backend.remove("ghost") is False
    assert backend.get_states(["ghost"]) == [None]


def test_management_calls_on_a_removed_job_say_it_was_removed(backend):
    # So that an instance which has not heard of the removal yet drops the job rather than
    # taking it for lost and re-creating it.
    register_due(backend)
    assert backend.remove("job") is True
    removed = DueEntry("job", None, None, missing=True, removed=True)
    assert backend.run_now("job") == removed
    assert backend.pause("job") == removed
    assert backend.resume("job") == removed
    assert backend.job_names() == []


def test_pause_and_resume(backend):
    state = register_due(backend)
    assert backend.pause("job") == DueEntry("job", None, state.next_run_ms)
    assert state_of(backend).paused
    assert backend.resume("job") == DueEntry("job", state.next_run_ms, state.next_run_ms)
    assert claim_one(backend, regular(state)).attempt == 1


def test_a_running_job_paused_and_resumed_is_due_at_its_lease_expiry(backend):
    state = register_due(backend)
    held = claim_one(backend, regular(state))
    assert backend.pause("job").due_ms is None
    assert backend.refresh([lease_of(held)], LONG) == [True]
    assert state_of(backend).due_ms is None
    resumed = backend.resume("job")
    assert resumed.due_ms == state_of(backend).due_ms > backend.now_ms()


def test_remove_drops_the_job_and_its_state(backend):
    state = register_due(backend)
    held = claim_one(backend, regular(state))
    assert backend.remove("job") is True
    assert backend.remove("job") is False
    assert backend.get_states(["job"]) == [None]
    assert backend.job_names() == []
    assert backend.finish([Outcome(lease_of(held), True)]) == [None]
    assert backend.refresh([lease_of(held)], LONG) == [False]
    assert claim(backend, peek=5).due == []


# -- counters and state -----------------------------------------------------------------------


def test_counters_follow_attempts_and_occurrences(backend):
    state = register_due(backend, ago=10_000)

    def run(request: ClaimRequest, **outcome) -> JobState:
        held = claim_one(backend, request)
        (after,) = backend.finish([Outcome(lease_of(held), **outcome)])
        assert after is not None
        return after

    # An attempt fails and asks for a retry: counted as a run, not yet as a failure
    after = run(regular(state, "a", following=state.next_run_ms + 1_000), succeeded=False,
                error="first", duration=0.5, retry_delay_ms=0)
    assert (after.run_count, after.failure_count, after.consecutive_failures) == (1, 0, 0)
    assert after.last_error == "first" and not after.last_failed
    # The retry fails for good: the occurrence failed
    after = run(again(backend, "job", "b"), succeeded=False, error="second")
    assert (after.run_count, after.failure_count, after.consecutive_failures) == (2, 1, 1)
    assert after.last_error == "second" and after.last_failed
    assert after.last_run_ms is not None and after.last_success_ms is None
    # The next occurrence fails at once, then the one after succeeds
    after = run(regular(after, "c", following=after.next_run_ms + 1_000), succeeded=False,
                error="third")
    assert (after.failure_count, after.consecutive_failures) == (2, 2)
    after = run(regular(after, "d", following=after.next_run_ms + 1_000), succeeded=True,
                duration=2.0)
    assert (after.run_count, after.failure_count, after.consecutive_failures) == (4, 2, 0)
    assert not after.last_failed and after.last_error == "third"
    assert after.last_success_ms is not None and after.last_duration == 2.0
    assert after.occurrence_status == "" and after.occurrence_attempt == 0
    assert state_of(backend) == after


def test_get_states_and_job_names(backend):
    now = backend.now_ms()
    backend.register([JobDefinition("b", now), JobDefinition("a", now + 1)])
    a, ghost, b = backend.get_states(["a", "ghost", "b"])
    assert (a.name, a.next_run_ms, ghost, b.name) == ("a", now + 1, None, "b")
    assert backend.job_names() == ["a", "b"]


# -- many jobs, two instances -----------------------------------------------------------------


def test_many_jobs_are_each_claimed_once_across_two_instances(backend, driver):
    # Given 1,000 due jobs and two instances racing over them in batches of 10
    now = backend.now_ms()
    states = backend.register([JobDefinition(f"job-{i:04}", now - 1_000) for i in range(1_000)])
    instances = [backend, driver.peer()]
    claims: list[list[Claim]] = [[], []]

    def work(index: int) -> None:
        order = states if index == 0 else states[::-1]
        for start in range(0, len(order), 10):
            requests = [regular(s, f"i{index}-{s.name}") for s in order[start:start + 10]]
            claims[index] += instances[index].claim(f"i{index}", requests, LONG, 0).claims

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then every job was claimed exactly once
    counts = Counter(c.job_name for c in claims[0] + claims[1])
    assert len(counts) == 1_000 and set(counts.values()) == {1}


# -- finish and claim in one call --------------------------------------------------------------


def test_finish_and_claim_records_first_then_claims(backend):
    # Given one claimed occurrence, and another job due
    first = claim_one(backend, regular(register_due(backend, "first")))
    second = register_due(backend, "second")

    # When its failure (retry at once) is recorded in the same call that claims the other job
    # and peeks at what else is due
    states, batch = backend.finish_and_claim(
        [Outcome(lease_of(first), False, "boom", 0.25, retry_delay_ms=0)], "instance",
        [regular(second)], LONG, 5)

    # Then the outcome was recorded, as finish() records it ...
    (after,) = states
    assert after is not None and after.occurrence_status == "retry_wait"
    assert after.run_count == 1 and after.last_error == "boom" and after.last_duration == 0.25
    # ... before the claim, whose peek already sees the retry due
    assert [c.job_name for c in batch.claims] == ["second"]
    assert [d.name for d in batch.due] == ["first"]
    # And a stale outcome is answered None, as finish() answers it
    states, batch = backend.finish_and_claim(
        [Outcome(lease_of(first), True)], "instance", [], LONG, 0)
    assert states == [None] and batch.claims == []


# -- definitions changed by a rolling deploy --------------------------------------------------

OLD = "aaaa.1111"  # definition versions: <schedule part>.<the rest>
NEW_SCHEDULE = "bbbb.1111"
NEW_OPTION = "aaaa.2222"


def test_a_new_schedule_replaces_the_old_one_and_its_claims_are_refused(backend):
    # Given a job due under its old schedule
    old = register_due(backend, version=OLD)
    # When an instance registers it with another schedule (its next run an hour from now)
    first_new = backend.now_ms() + HOUR
    (new,) = backend.register([JobDefinition("job", first_new, version=NEW_SCHEDULE)])
    # Then the old schedule's occurrence is gone, and the regular runs follow the new one
    assert new.next_run_ms == first_new and new.due_ms == first_new
    # And a claim made with the old definition is refused as superseded, writing nothing
    (refused,) = claim(backend, regular(old, definition_version=OLD)).refused
    assert refused.superseded and refused.next_run_ms == first_new
    assert state_of(backend).next_run_ms == first_new and state_of(backend).fence == 0


def test_a_changed_option_keeps_the_schedule_and_refuses_old_claims(backend):
    old = register_due(backend, version=OLD)
    (new,) = backend.register([JobDefinition("job", backend.now_ms() + HOUR,
                                             version=NEW_OPTION)])
    assert new.next_run_ms == old.next_run_ms  # the due occurrence stays due
    (refused,) = claim(backend, regular(old, "o1", definition_version=OLD)).refused
    assert refused.superseded
    claimed = claim_one(backend, regular(new, "o2", definition_version=NEW_OPTION))
    assert claimed.scheduled_ms == old.next_run_ms


def test_the_old_definition_registered_back_takes_the_job_back(backend):
    # "The last registration wins": a rollback is a registration too.
    register_due(backend, version=OLD)
    backend.register([JobDefinition("job", backend.now_ms() + HOUR, version=NEW_SCHEDULE)])
    (back,) = backend.register([JobDefinition("job", backend.now_ms() - 500, version=OLD)])
    refused = claim(backend, regular(back, "o1", definition_version=NEW_SCHEDULE)).refused
    assert refused[0].superseded
    assert claim_one(backend, regular(back, "o2", definition_version=OLD)).attempt == 1


def test_versions_are_only_compared_when_both_sides_have_one(backend):
    # Data stored without a version (an older release) and claims that name none are
    # not refused; the first versioned registration adopts its version without moving
    # the schedule.
    unversioned = register_due(backend)
    (adopted,) = backend.register([JobDefinition("job", backend.now_ms() + HOUR,
                                                 version=OLD)])
    assert adopted.next_run_ms == unversioned.next_run_ms
    claimed = claim_one(backend, regular(adopted))
    assert claimed.scheduled_ms == unversioned.next_run_ms


def test_a_resent_claim_is_answered_even_after_a_new_version(backend):
    old = register_due(backend, version=OLD)
    request = regular(old, "o1", definition_version=OLD)
    first = claim_one(backend, request)
    backend.register([JobDefinition("job", backend.now_ms() + HOUR, version=NEW_SCHEDULE)])
    assert claim_one(backend, request) == first  # its reply was lost: it holds the lease


def test_a_one_time_job_that_ran_stays_done_under_a_new_schedule(backend):
    # A OnceSchedule computed from the start time differs on every instance: the job must
    # not run again each time one more instance registers it.
    old = register_due(backend, version=OLD)
    claimed = claim_one(backend, ClaimRequest("job", "o1", old.due_ms, old.next_run_ms,
                                              old.next_run_ms, None, definition_version=OLD))
    backend.finish([Outcome(lease_of(claimed), True)])
    (new,) = backend.register([JobDefinition("job", backend.now_ms() - 10,
                                             version=NEW_SCHEDULE)])
    assert new.next_run_ms is None and new.due_ms is None


# -- a timed-out handler that goes on -----------------------------------------------------------


def test_the_retry_of_an_attempt_whose_handler_goes_on_waits_for_its_lease(backend):
    # Given an attempt settled at its timeout while its handler ignores the cancellation
    state = register_due(backend, "stuck")
    claimed = claim_one(backend, regular(state, "o1"))
    lease_end = claimed.claimed_at_ms + claimed.lease_ms
    (after,) = backend.finish([Outcome(lease_of(claimed), False, "timed out after 1 s",
                                       retry_delay_ms=0, still_running=True)])
    # Then its retry is due only when the lease it held runs out, not after the backoff
    assert after is not None and after.due_ms == lease_end
    # While an attempt whose handler returned is retried after its backoff alone
    other = register_due(backend, "returned")
    claimed = claim_one(backend, regular(other, "o2"))
    (after,) = backend.finish([Outcome(lease_of(claimed), False, "boom", retry_delay_ms=0)])
    assert after is not None and after.due_ms < claimed.claimed_at_ms + claimed.lease_ms


# -- live instances ---------------------------------------------------------------------------


def instance(instance_id: str, *running: str, **kwargs) -> InstanceInfo:
    fields = {"host": "hôst-1", "pid": 4321, "started_at_ms": 1_700_000_000_123,
              "library_version": "9.8.7", "max_concurrent": 3}
    fields.update(kwargs)
    return InstanceInfo(instance_id, running=running, **fields)


def test_a_heartbeat_records_the_instance_on_the_backends_clock(driver):
    backend = driver.backend
    before = backend.now_ms()
    (live,) = backend.heartbeat(instance("i-1", "a", "b"), LONG)
    after = backend.now_ms()
    # What was sent comes back as sent, stamped with the backend's time of the heartbeat
    assert live == InstanceInfo("i-1", "hôst-1", 4321, 1_700_000_000_123, "9.8.7", 3,
                                ("a", "b"), live.last_heartbeat_ms)
    assert before <= live.last_heartbeat_ms <= after
    # And every instance on the store sees it, without writing anything
    assert driver.peer().instances() == [live]
    assert backend.instances() == [live]


def test_a_heartbeat_carries_the_fingerprint_of_the_instances_jobs(driver):
    (live,) = driver.backend.heartbeat(instance("i-1", jobs_digest="ab12"), LONG)
    assert live.jobs_digest == "ab12"
    assert [info.jobs_digest for info in driver.peer().instances()] == ["ab12"]


def test_heartbeats_replace_their_own_record_and_list_everyone_sorted_by_id(driver):
    backend, peer = driver.backend, driver.peer()
    backend.heartbeat(instance("i-2", "a"), LONG)
    peer.heartbeat(instance("i-1"), LONG)
    live = backend.heartbeat(instance("i-2"), LONG)  # "a" has finished
    assert [(info.instance_id, info.running) for info in live] == [("i-1", ()), ("i-2", ())]
    assert peer.instances() == live


def test_an_instance_that_stops_heartbeating_expires_after_its_ttl(driver):
    # Given an instance that heartbeats once with a short TTL, and another that keeps on
    backend, peer = driver.backend, driver.peer()
    backend.heartbeat(instance("crashed"), SHORT)
    peer.heartbeat(instance("alive"), LONG)
    assert [info.instance_id for info in peer.instances()] == ["alive", "crashed"]
    # When its TTL has run out on the backend's clock
    driver.advance_past(SHORT)
    # Then nobody lists it, reading or heartbeating
    assert [info.instance_id for info in peer.instances()] == ["alive"]
    assert [info.instance_id for info in peer.heartbeat(instance("alive"), LONG)] == ["alive"]
    assert [info.instance_id for info in backend.instances()] == ["alive"]


def test_a_heartbeat_sets_the_ttl_anew(driver):
    # A heartbeat is an upsert whose expiry counts from its own now, never an extension
    backend = driver.backend
    backend.heartbeat(instance("i-1"), LONG)
    backend.heartbeat(instance("i-1"), SHORT)
    driver.advance_past(SHORT)
    assert backend.instances() == []


def test_leave_removes_the_record_at_once(driver):
    backend, peer = driver.backend, driver.peer()
    backend.heartbeat(instance("leaving"), LONG)
    peer.heartbeat(instance("staying"), LONG)
    backend.leave("leaving")
    assert [info.instance_id for info in peer.instances()] == ["staying"]
    backend.leave("leaving")  # again, or never there: nothing happens
    backend.leave("unknown")
    assert [info.instance_id for info in backend.instances()] == ["staying"]


def test_the_members_epoch_changes_when_an_instance_joins_or_leaves_and_only_then(driver):
    # Every claim answer carries it, so that each instance notices a change of the group at
    # its next claim instead of its next heartbeat
    backend, peer = driver.backend, driver.peer()

    def epoch() -> int:
        return claim(peer).members_epoch

    start = epoch()
    backend.heartbeat(instance("i-1"), LONG)
    joined = epoch()
    assert joined != start
    backend.heartbeat(instance("i-1", "a"), LONG)  # the same instance again: no change
    peer.heartbeat(instance("i-2"), LONG)
    second = epoch()
    assert second != joined
    backend.heartbeat(instance("i-1"), LONG)
    assert epoch() == second
    backend.leave("i-1")
    left = epoch()
    assert left != second
    backend.leave("i-1")  # gone already
    assert epoch() == left


def test_an_expired_instance_changes_the_members_epoch_at_the_next_heartbeat(driver):
    backend, peer = driver.backend, driver.peer()
    backend.heartbeat(instance("crashed"), SHORT)
    peer.heartbeat(instance("alive"), LONG)
    before = claim(peer).members_epoch
    driver.advance_past(SHORT)
    peer.heartbeat(instance("alive"), LONG)  # drops the expired record
    assert claim(peer).members_epoch != before


def test_no_instances_before_any_heartbeat(backend):
    assert backend.instances() == []


# -- the running attempt's owner --------------------------------------------------------------


def test_the_state_names_the_owner_of_the_running_attempt_only(backend):
    claimed = claim_one(backend, regular(register_due(backend)))
    assert state_of(backend).owner == "owner-1"
    backend.finish([Outcome(lease_of(claimed), False, "boom", 0.1, retry_delay_ms=HOUR)])
    assert state_of(backend).owner == ""  # waiting for its retry: nobody holds it


# -- run history ------------------------------------------------------------------------------


def register_idle(backend, name: str = "job") -> None:
    """A job with no regular occurrence: it runs when asked (run_now) only."""
    backend.register([JobDefinition(name, None)])


def run_once(backend, outcome: Outcome = None, *, name: str = "job", owner: str = "owner",
             **fields) -> Claim:
    """Ask for a run now, claim it and finish it with ``outcome``'s fields (its lease given)."""
    backend.run_now(name)
    claimed = claim_one(backend, again(backend, name, owner))
    fields.setdefault("history_limit", 10)
    backend.finish([Outcome(lease_of(claimed), fields.pop("succeeded", True), **fields)])
    return claimed


def test_finish_records_the_attempt_in_the_job_and_group_history(backend):
    # Given a claimed occurrence
    state = register_due(backend)
    claimed = claim_one(backend, regular(state, "host:1:abcdef012345:7"))

    # When its success is recorded with a history limit
    backend.finish([Outcome(lease_of(claimed), True, duration=0.25, history_limit=5)])

    # Then the attempt is in the job's history and the group's, as plain data
    record = RunRecord(job="job", scheduled_ms=state.next_run_ms, attempt=1, kind="regular",
                       owner="host:1:abcdef012345:7", fence=claimed.fence,
                       started_ms=claimed.claimed_at_ms, duration=0.25, outcome="succeeded",
                       error="")
    assert backend.history("job", 10) == [record]
    assert backend.history(None, 10) == [record]


def test_history_is_newest_first_with_each_attempts_outcome_and_kind(backend):
    # Given an occurrence that fails, is retried, times out, is retried and succeeds
    first = claim_one(backend, regular(register_due(backend)))
    backend.finish([Outcome(lease_of(first), False, "boom", 0.5, retry_delay_ms=0,
                            history_limit=10)])
    second = claim_one(backend, again(backend, "job", "owner-2"))
    backend.finish([Outcome(lease_of(second), False, "timed out after 1 s", 1.0,
                            retry_delay_ms=0, timed_out=True, history_limit=10)])
    third = claim_one(backend, again(backend, "job", "owner-3"))
    backend.finish([Outcome(lease_of(third), True, duration=0.1, history_limit=10)])

    # Then the history shows the three attempts, newest first
    history = backend.history("job", 10)
    assert [(r.attempt, r.kind, r.outcome, r.error, r.owner) for r in history] == [
        (3, "retry", "succeeded", "", "owner-3"),
        (2, "retry", "timed_out", "timed out after 1 s", "owner-2"),
        (1, "regular", "failed", "boom", "owner-1")]
    assert len({r.scheduled_ms for r in history}) == 1
    assert [r.fence for r in history] == [third.fence, second.fence, first.fence]
    assert backend.history("job", 2) == history[:2]


def test_each_jobs_history_keeps_its_limit_and_the_group_all_of_them(backend):
    register_idle(backend, "a")
    register_idle(backend, "b")
    for run in range(5):
        run_once(backend, name="a", owner=f"a{run}", history_limit=3)
    run_once(backend, name="b", owner="b0", history_limit=3)
    assert [r.owner for r in backend.history("a", 10)] == ["a4", "a3", "a2"]
    assert [r.owner for r in backend.history(None, 10)] == ["b0", "a4", "a3", "a2", "a1", "a0"]
    assert [r.owner for r in backend.history(None, 2)] == ["b0", "a4"]


def test_the_group_history_is_bounded(backend):
    # Given more jobs than the group history keeps, each run once in one call
    count = GROUP_HISTORY_LIMIT + 5
    states = backend.register([JobDefinition(f"job-{n:04}", backend.now_ms() - 1_000)
                               for n in range(count)])
    batch = claim(backend, *(regular(state, f"owner-{state.name}") for state in states))
    assert len(batch.claims) == count
    backend.finish([Outcome(lease_of(claimed), True, history_limit=1)
                    for claimed in batch.claims])

    # Then the group keeps the newest GROUP_HISTORY_LIMIT, and every job its own
    group = backend.history(None, count)
    assert len(group) == GROUP_HISTORY_LIMIT
    assert group[0].job == batch.claims[-1].job_name
    assert [len(backend.history(state.name, 5)) for state in states] == [1] * count


def test_limit_zero_records_nothing(backend):
    register_idle(backend)
    run_once(backend, history_limit=0)
    assert backend.history("job", 10) == [] and backend.history(None, 10) == []
    assert state_of(backend).run_count == 1


def test_a_stale_outcome_records_nothing(backend):
    claimed = claim_one(backend, regular(register_due(backend)))
    stale = Lease(claimed.job_name, claimed.owner, claimed.fence - 1)
    assert backend.finish([Outcome(stale, True, history_limit=10)]) == [None]
    assert backend.history("job", 10) == []


def test_the_error_text_is_cut_to_its_bound_at_a_character_boundary(backend):
    register_idle(backend)
    error = "é" * HISTORY_ERROR_BYTES  # two bytes each in UTF-8
    run_once(backend, succeeded=False, error=error)
    (record,) = backend.history("job", 1)
    assert error.startswith(record.error)
    assert HISTORY_ERROR_BYTES - 2 < len(record.error.encode("utf-8")) <= HISTORY_ERROR_BYTES
    assert state_of(backend).last_error == error  # the state keeps it whole


def test_remove_drops_the_jobs_history_and_keeps_the_others(backend):
    register_idle(backend, "a")
    register_idle(backend, "b")
    run_once(backend, name="a", owner="a0")
    run_once(backend, name="b", owner="b0")
    run_once(backend, name="a", owner="a1")
    assert backend.remove("a")
    assert backend.history("a", 10) == []
    assert [r.owner for r in backend.history(None, 10)] == ["b0"]
    # registered again, it starts with no history
    register_idle(backend, "a")
    assert backend.history("a", 10) == []


def test_finish_and_claim_records_the_history_too(backend):
    first = claim_one(backend, regular(register_due(backend, "first")))
    second = register_due(backend, "second")
    backend.finish_and_claim([Outcome(lease_of(first), True, duration=0.5, history_limit=10)],
                             "instance", [regular(second)], LONG, 0)
    (record,) = backend.history("first", 10)
    assert (record.outcome, record.fence, record.duration) == ("succeeded", first.fence, 0.5)


def test_no_history_for_unknown_jobs_or_an_empty_group(backend):
    assert backend.history("nobody", 10) == []
    assert backend.history(None, 10) == []


def abandon(backend, driver, name: str = "job", *, history_limit: int = 10,
            owner: str = "lost") -> tuple[Claim, ClaimBatch]:
    """Ask for a run now, let its claim's lease run out (recovery disabled) and have another
    instance's claim abandon it, with ``history_limit``: the lost claim and that batch."""
    backend.run_now(name)
    lost = claim_one(backend, again(backend, name, owner, max_recoveries=0), lease_ms=SHORT)
    driver.pass_instant(state_of(backend, name).due_ms)
    batch = claim(backend, again(backend, name, "rescuer", max_recoveries=0,
                                 history_limit=history_limit))
    assert batch.abandoned == [name], batch
    return lost, batch


def test_an_abandoned_attempt_is_recorded_as_its_claim_stood(backend, driver):
    # Given an occurrence recovered once, whose recovery also stopped mid-run
    state = register_due(backend)
    claim_one(backend, regular(state, "first", max_recoveries=1), lease_ms=SHORT)
    driver.pass_instant(state_of(backend).due_ms)
    second = claim_one(backend, again(backend, "job", "second", max_recoveries=1),
                       lease_ms=SHORT)
    driver.pass_instant(state_of(backend).due_ms)

    # When a claim with a history limit abandons it
    batch = claim(backend, again(backend, "job", "third", max_recoveries=1, history_limit=5))

    # Then the abandoned attempt (the recovery) is in the job's history and the group's
    assert batch.abandoned == ["job"]
    record = RunRecord(job="job", scheduled_ms=state.next_run_ms, attempt=2,
                       kind=OccurrenceKind.RECOVERY, owner="second", fence=second.fence,
                       started_ms=second.claimed_at_ms, duration=0.0,
                       outcome=RunOutcome.ABANDONED, error=ABANDONED_ERROR)
    assert backend.history("job", 10) == [record]
    assert backend.history(None, 10) == [record]
    # And the state counts it as a failure, not as a run
    after = state_of(backend)
    assert (after.run_count, after.failure_count, after.last_error) == (0, 1, ABANDONED_ERROR)


def test_an_abandoned_interrupted_attempt_is_recorded_too(backend):
    # Given an occurrence its holder handed back at shutdown, with recovery disabled
    state = register_due(backend)
    held = claim_one(backend, regular(state, "stopping", max_recoveries=0))
    assert backend.interrupt([lease_of(held)]) == [True]
    # When another instance's claim abandons it
    batch = claim(backend, again(backend, "job", "rescuer", max_recoveries=0,
                                 history_limit=10))
    # Then the interrupted attempt is recorded as abandoned
    assert batch.abandoned == ["job"]
    (record,) = backend.history("job", 10)
    assert (record.owner, record.fence, record.attempt, record.kind, record.outcome) == (
        "stopping", held.fence, 1, OccurrenceKind.REGULAR, RunOutcome.ABANDONED)


def test_an_abandonment_without_a_history_limit_records_nothing(backend, driver):
    register_idle(backend)
    abandon(backend, driver, history_limit=0)
    assert backend.history("job", 10) == [] and backend.history(None, 10) == []
    assert state_of(backend).failure_count == 1


def test_an_abandonment_keeps_the_jobs_history_to_its_limit(backend, driver):
    # Given a job with three finished runs in its history
    register_idle(backend)
    for run in range(3):
        run_once(backend, owner=f"run{run}", history_limit=3)
    # When an occurrence is abandoned by a claim that keeps two records
    abandon(backend, driver, history_limit=2)
    # Then the job keeps the abandoned attempt and its newest run; the group keeps all four
    assert [(r.owner, r.outcome) for r in backend.history("job", 10)] == [
        ("lost", "abandoned"), ("run2", "succeeded")]
    assert [r.owner for r in backend.history(None, 10)] == ["lost", "run2", "run1", "run0"]


def test_finish_and_claim_records_an_outcome_and_an_abandonment(backend, driver):
    # Given a run to finish, and another job whose holder stopped mid-run
    first = claim_one(backend, regular(register_due(backend, "first")))
    register_idle(backend, "second")
    backend.run_now("second")
    lost = claim_one(backend, again(backend, "second", "lost", max_recoveries=0),
                     lease_ms=SHORT)
    driver.pass_instant(state_of(backend, "second").due_ms)
    # When one call finishes the first and abandons the second
    _, batch = backend.finish_and_claim(
        [Outcome(lease_of(first), True, duration=0.5, history_limit=10)], "instance",
        [again(backend, "second", "rescuer", max_recoveries=0, history_limit=10)], LONG, 0)
    # Then both are recorded, the outcome first
    assert batch.abandoned == ["second"]
    assert [(r.job, r.fence, r.outcome) for r in backend.history(None, 10)] == [
        ("second", lost.fence, "abandoned"), ("first", first.fence, "succeeded")]
