"""A job's definition changed by a rolling deploy: old and new instances side by side.

The rule (README.rst, "Many processes, one Redis"): the group runs a job as it was last
registered. From the moment the first instance with the new definition registers, no
occurrence is claimed under the old one, and the old instances, which keep running, neither
claim it nor write their schedule back.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from pyscheduler import CronSchedule, IntervalSchedule, Job, MemoryBackend
from pyscheduler.clock import FakeClock

from .helpers import START, Recorder, step, stepped


def test_after_the_new_definition_registers_only_its_schedule_runs(caplog):
    clock = FakeClock(START)
    backend = MemoryBackend(clock)
    # Given an old instance running a job every 10 s
    old_runs = Recorder()
    old = stepped(clock, backend, instance_id="old")
    old.register(Job("report", IntervalSchedule(10), old_runs))
    old.start(background=False)
    clock.advance(10)
    step(old)
    assert [at for _, at, *_ in old_runs.calls] == [START + timedelta(seconds=10)]

    # When a new instance registers it on a cron schedule (every minute, at second 30)
    clock.advance(5)
    new_runs = Recorder()
    new = stepped(clock, backend, instance_id="new")
    new.register(Job("report", CronSchedule("30 * * * * *"), new_runs))
    new.start(background=False)

    # And both keep ticking for three minutes, the old one first every time
    with caplog.at_level(logging.WARNING, logger="pyscheduler"):
        for _ in range(180):
            clock.advance(1)
            step(old)
            step(new)

    # Then the old instance ran nothing more, and the new one ran every :30 on time
    assert len(old_runs.calls) == 1
    new_times = [at for _, at, *_ in new_runs.calls]
    assert new_times == [START + timedelta(minutes=m, seconds=30) for m in range(3)]
    assert all(kind == "regular" for *_, kind in new_runs.calls)
    # And the stored schedule is still the new one (nothing flipped it back)
    (state,) = backend.get_states(["report"])
    assert state is not None and state.description["schedule"] == \
        new.get_job("report").describe()["schedule"]
    assert state.next_run_ms == int((START + timedelta(minutes=3, seconds=30)).timestamp()
                                    * 1000)
    # And the old instance said once why it stopped running the job
    warnings = [r for r in caplog.records if "different definition" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    old.stop()
    new.stop()


def test_a_rollback_registration_takes_the_job_back_for_the_old_instances():
    clock = FakeClock(START)
    backend = MemoryBackend(clock)
    old_runs, new_runs = Recorder(), Recorder()
    old = stepped(clock, backend, instance_id="old")
    old.register(Job("report", IntervalSchedule(10), old_runs))
    old.start(background=False)
    new = stepped(clock, backend, instance_id="new")
    new.register(Job("report", IntervalSchedule(7), new_runs))
    new.start(background=False)
    for _ in range(20):
        clock.advance(1)
        step(old)
    assert old_runs.calls == []  # superseded: the new instance is not ticking, nobody runs
    # When the new instance goes away and an instance of the old version starts (rollback)
    new.stop()
    rolled_back = stepped(clock, backend, instance_id="rollback")
    rolled_back.register(Job("report", IntervalSchedule(10), Recorder()))
    rolled_back.start(background=False)
    # Then the old instance, which left the job, takes part again (through its peeks)
    for _ in range(30):
        clock.advance(1)
        step(old)
    assert len(old_runs.calls) >= 2
    old.stop()
    rolled_back.stop()
