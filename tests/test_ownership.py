"""Ownership: each job's occurrences are claimed on time by one live instance, its owner, and
by the others only once ``takeover_delay`` overdue.

The pure cases check the rendezvous hashing; the others run stepped schedulers sharing one
memory backend on a FakeClock (``refresh_leases`` sends their heartbeats), counting claims
through the metrics hooks: an occurrence refused to one instance because another claimed it
is a ``lock_contended``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from pyscheduler import ConfigError, IntervalSchedule, Job, MemoryBackend, SchedulerConfig
from pyscheduler.ownership import Ownership

from .helpers import START, MetricsRecorder, Recorder, step

EVERY = 20.0  # below the stepped schedulers' lock_ttl (30 s): records stay live between rounds
JOBS = [f"job-{n:03d}" for n in range(60)]


def owner_among(members: list[str], name: str) -> str:
    ownership = Ownership(members[0])
    ownership.set_members(members)
    return ownership.owner_of(name)


# -- rendezvous hashing -----------------------------------------------------------------------


def test_alone_an_instance_owns_every_job():
    ownership = Ownership("me")
    assert ownership.alone and all(ownership.owns(name) for name in JOBS)
    assert not ownership.set_members(["me"])  # the same list: nothing to recompute


def test_every_instance_computes_the_same_owner_and_owns_only_its_jobs():
    members = ["a", "b", "c", "d"]
    views = {member: Ownership(member) for member in members}
    for view in views.values():
        view.set_members(reversed(members))  # the order of the answer does not matter
    for name in JOBS:
        owner = views["a"].owner_of(name)
        assert {view.owner_of(name) for view in views.values()} == {owner}
        assert [member for member, view in views.items() if view.owns(name)] == [owner]


def test_jobs_spread_evenly_over_the_instances():
    names = [f"job-{n}" for n in range(4000)]
    ownership = Ownership("a")
    ownership.set_members(["a", "b", "c", "d"])
    counts = Counter(ownership.owner_of(name) for name in names)
    assert set(counts) == {"a", "b", "c", "d"}
    assert all(800 <= count <= 1200 for count in counts.values()), counts


def test_only_the_jobs_of_an_instance_that_left_change_owner():
    names = [f"job-{n}" for n in range(2000)]
    ownership = Ownership("a")
    ownership.set_members(["a", "b", "c"])
    before = {name: ownership.owner_of(name) for name in names}
    assert ownership.set_members(["a", "b"])
    moved = [name for name in names if ownership.owner_of(name) != before[name]]
    assert moved and all(before[name] == "c" for name in moved)
    assert len(moved) == sum(1 for owner in before.values() if owner == "c")


def test_an_instance_counts_itself_live_whatever_the_list_says():
    ownership = Ownership("me")
    ownership.set_members(["other"])  # its own record expired while it was cut off
    assert ownership.members == ("me", "other")
    assert any(ownership.owns(name) for name in JOBS)


def test_the_takeover_delay_is_validated():
    assert SchedulerConfig(takeover_delay=timedelta(seconds=2)).takeover_seconds == 2.0
    assert SchedulerConfig(takeover_delay=0).takeover_seconds == 0.0
    with pytest.raises(ConfigError, match="takeover_delay"):
        SchedulerConfig(takeover_delay=-1)
    assert SchedulerConfig.from_env({"PYSCHEDULER_TAKEOVER_DELAY": "0.5"}).takeover_delay == 0.5


# -- stepped schedulers on one backend --------------------------------------------------------


class Group:
    """Stepped schedulers on one memory backend and clock, registering the same jobs."""

    def __init__(self, clock, schedulers, ids, jobs=JOBS, **config) -> None:
        self.clock, self.backend = clock, MemoryBackend(clock)
        self.recorder = Recorder()
        self.metrics = {member: MetricsRecorder() for member in ids}
        self.members = {}
        config.setdefault("max_concurrent", len(jobs) or 1)  # a round in one tick
        for member in ids:
            scheduler = schedulers.stepped(clock, self.backend, instance_id=member,
                                           metrics=self.metrics[member], **config)
            for name in jobs:
                scheduler.register(Job(name, IntervalSchedule(EVERY), self.recorder))
            self.members[member] = scheduler
        for scheduler in self.members.values():
            scheduler.start(background=False)

    def beat_and_step(self, *members: str) -> None:
        """Heartbeats (learning the live instances), then one tick, on each member."""
        chosen = members or tuple(self.members)
        for member in chosen:
            self.members[member].refresh_leases()
        for member in chosen:
            step(self.members[member])

    def heartbeat_all(self) -> None:
        for scheduler in self.members.values():
            scheduler.lock.heartbeat()

    def started(self, member: str) -> int:
        return self.metrics[member].names().count("job_started")

    def contended(self) -> int:
        return sum(m.names().count("lock_contended") for m in self.metrics.values())


def test_each_occurrence_is_claimed_once_by_its_owner_and_never_contended(fake_clock,
                                                                          schedulers):
    # Given three instances that have heard of each other
    group = Group(fake_clock, schedulers, ["a", "b", "c"])
    group.heartbeat_all()
    # When two rounds of occurrences come due and every instance ticks
    for _ in range(2):
        fake_clock.advance(EVERY)
        group.beat_and_step()
    # Then each occurrence ran once, each on its owner, and no claim was refused
    occurrences = group.recorder.occurrences()
    assert len(occurrences) == 2 * len(JOBS) and set(occurrences.values()) == {1}
    assert group.contended() == 0
    for member in group.members:
        assert group.started(member) == 2 * sum(owner_among(["a", "b", "c"], name) == member
                                                for name in JOBS)


def test_an_instance_that_joins_is_heard_of_at_the_next_claim(fake_clock, schedulers):
    # Given two instances that know each other, and a third one starting later
    group = Group(fake_clock, schedulers, ["a", "b"])
    group.heartbeat_all()
    fake_clock.advance(EVERY)
    group.beat_and_step()
    late = schedulers.stepped(fake_clock, group.backend, instance_id="c",
                              metrics=MetricsRecorder())
    for name in JOBS:
        late.register(Job(name, IntervalSchedule(EVERY), group.recorder))
    late.start(background=False)
    # When the others claim once (the answer tells them the group changed), then heartbeat
    # as their lease refresher does at once, no clock time later
    group.beat_and_step()
    group.beat_and_step()
    step(late)
    # Then all three agree on who is live, well before a heartbeat interval passed
    for scheduler in (*group.members.values(), late):
        assert scheduler._claimer.ownership.members == ("a", "b", "c")


def test_the_jobs_of_an_instance_that_stopped_are_claimed_on_time_by_the_others(fake_clock,
                                                                               schedulers):
    # (heartbeats every 25 s: none is due by itself within a round)
    group = Group(fake_clock, schedulers, ["a", "b", "c"], lock_refresh_interval=25)
    group.heartbeat_all()
    fake_clock.advance(EVERY)
    group.beat_and_step()
    # When one instance stops (it leaves the group) and the others claim and heartbeat
    group.members["c"].stop()
    group.beat_and_step("a", "b")  # the claim answers tell the group changed
    group.beat_and_step("a", "b")
    # Then the next round runs entirely on time on the two that are left, uncontended
    before = len(group.recorder.calls)
    fake_clock.advance(EVERY)
    group.beat_and_step("a", "b")
    assert len(group.recorder.calls) - before == len(JOBS)
    assert group.contended() == 0


def test_a_crashed_owners_occurrence_is_taken_over_once_overdue(fake_clock, schedulers):
    # Given two instances that know each other, one of which stops ticking (crashed, its
    # record still live)
    # (a's record outlives the test: only what b concludes makes it take a's jobs)
    group = Group(fake_clock, schedulers, ["a", "b"], tick_interval=5, lock_ttl=300)
    group.heartbeat_all()
    owned_by_a = [name for name in JOBS if owner_among(["a", "b"], name) == "a"]
    assert owned_by_a
    group.beat_and_step("b")  # b parks a's jobs
    # When the occurrences come due, b alone ticking claims only its own
    fake_clock.advance(EVERY)
    group.beat_and_step("b")
    ran = {name for name, *_ in group.recorder.calls}
    assert ran.isdisjoint(owned_by_a) and ran
    # and once they are takeover_delay overdue, b's next poll takes a's over
    fake_clock.advance(SchedulerConfig().takeover_seconds)
    group.beat_and_step("b")
    group.beat_and_step("b")
    occurrences = group.recorder.occurrences()
    assert len(occurrences) == len(JOBS) and set(occurrences.values()) == {1}
    late = [call for call in group.recorder.calls if call[0] in owned_by_a]
    assert {kind for *_, kind in late} == {"regular"}
    # and from then on b owns a's jobs too (a let them go overdue and has not heartbeaten
    # since): the next round runs on time, all of it on b
    fake_clock.advance(EVERY - SchedulerConfig().takeover_seconds)
    group.beat_and_step("b")
    occurrences = group.recorder.occurrences()
    assert len(occurrences) == 2 * len(JOBS) and set(occurrences.values()) == {1}


def test_a_suspected_owner_owns_its_jobs_again_once_it_heartbeats(fake_clock, schedulers):
    group = Group(fake_clock, schedulers, ["a", "b"], lock_ttl=300)
    group.heartbeat_all()
    group.beat_and_step("b")
    fake_clock.advance(EVERY + SchedulerConfig().takeover_seconds)
    for _ in range(3):  # a peek finds a's jobs overdue, a claim takes them, the tick follows
        group.beat_and_step("b")
    assert group.members["b"]._claimer.ownership.members == ("b",)  # a is suspected
    # When a comes back and heartbeats, and b hears of it at its own next heartbeat
    fake_clock.advance(0.5)
    group.members["a"].lock.heartbeat()
    group.members["b"].lock.heartbeat()
    group.beat_and_step("b")
    # Then b counts it among the owners again
    assert group.members["b"]._claimer.ownership.members == ("a", "b")


def test_a_job_its_owner_by_hashing_does_not_have_runs_on_time_on_one_that_has_it(
        fake_clock, schedulers):
    # Given two instances of different releases (a rolling deploy): only "b" has the new job,
    # whose owner by hashing over both would be "a"
    new_job = next(f"new-{n}" for n in range(100) if owner_among(["a", "b"], f"new-{n}") == "a")
    group = Group(fake_clock, schedulers, ["a", "b"], jobs=[])
    group.members["b"].register(Job(new_job, IntervalSchedule(EVERY), group.recorder))
    group.heartbeat_all()
    group.beat_and_step()
    # When its occurrence comes due
    fake_clock.advance(EVERY)
    group.beat_and_step()
    # Then "b" ran it on time, once: instances with different jobs do not own each other's
    assert [call[0] for call in group.recorder.calls] == [new_job]
    assert group.started("b") == 1


def test_a_takeover_delay_of_0_makes_every_instance_claim_on_time(fake_clock, schedulers):
    group = Group(fake_clock, schedulers, ["a", "b"], takeover_delay=0)
    group.heartbeat_all()
    fake_clock.advance(EVERY)
    group.beat_and_step()
    occurrences = group.recorder.occurrences()
    assert len(occurrences) == len(JOBS) and set(occurrences.values()) == {1}
    assert group.contended() == len(JOBS)  # every occurrence asked by both: one refused


def test_a_job_removed_elsewhere_is_dropped_by_every_instance_even_those_parking_it(
        fake_clock, schedulers):
    # Given two instances sharing the jobs, one of them paused (nobody asks for it)
    group = Group(fake_clock, schedulers, ["a", "b"])
    group.heartbeat_all()
    group.beat_and_step()
    group.members["a"].pause(JOBS[1])
    # When an operator removes two jobs straight through the backend, with no scheduler
    group.backend.remove(JOBS[0])
    group.backend.remove(JOBS[1])
    # Then the next claim of each instance tells it a job was removed, and both drop them
    # (neither owns both, and nobody asks for a paused job)
    group.beat_and_step()
    group.beat_and_step()
    for scheduler in group.members.values():
        names = {job.name for job in scheduler.jobs()}
        assert JOBS[0] not in names and JOBS[1] not in names and JOBS[2] in names


def test_a_job_changed_by_a_rolling_deploy_runs_on_time_on_the_new_instances(fake_clock,
                                                                             schedulers):
    # Given an old instance and a new one whose definition of a job differs (a timeout
    # added), the job's owner by hashing over both being the old one
    name = next(f"job-{n}" for n in range(100) if owner_among(["a", "b"], f"job-{n}") == "a")
    group = Group(fake_clock, schedulers, ["a", "b"], jobs=[])
    group.members["a"].register(Job(name, IntervalSchedule(EVERY), group.recorder))
    group.members["b"].register(Job(name, IntervalSchedule(EVERY), group.recorder, timeout=5))
    group.heartbeat_all()
    group.beat_and_step()
    # When its occurrence comes due
    fake_clock.advance(EVERY)
    group.beat_and_step()
    # Then the new instance ran it on time: the two have different jobs, so each divides
    # its own among the instances like it (the old one leaves this job to the new ones)
    assert [(call[0], call[1]) for call in group.recorder.calls] == [
        (name, START + timedelta(seconds=EVERY))]
    assert group.started("b") == 1
