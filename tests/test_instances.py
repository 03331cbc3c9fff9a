"""Live instances: every started scheduler heartbeats its record from the lease refresher,
a graceful stop removes it, and a crashed one's record expires one ``lock_ttl`` after its
last heartbeat.

Memory cases run stepped schedulers on a FakeClock (``refresh_leases`` is the refresher's
step); one Redis case runs real threads.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import pytest

import pyscheduler
from pyscheduler import (
    InstanceInfo,
    IntervalSchedule,
    Job,
    MemoryBackend,
    RedisBackend,
    Scheduler,
    SchedulerConfig,
)
from pyscheduler.backends.base import Backend

from .helpers import START, WAIT, Recorder

TTL, INTERVAL = 30, 10  # the stepped schedulers' lock_ttl and lock_refresh_interval


def ids(infos: list[InstanceInfo]) -> list[str]:
    return [info.instance_id for info in infos]


def test_two_started_schedulers_on_one_backend_see_each_other(fake_clock, schedulers):
    clock = fake_clock
    backend = MemoryBackend(clock)
    # Given two schedulers sharing a backend
    one = schedulers.stepped(clock, backend, instance_id="one", max_concurrent=2)
    two = schedulers.stepped(clock, backend, instance_id="two", max_concurrent=5)
    assert one.instances() == []  # not started: not one of them
    # When both have started
    one.start(background=False)
    two.start(background=False)
    # Then each lists both, from their own records
    assert one.instances() == two.instances()
    first, second = two.instances()
    assert (first.instance_id, first.max_concurrent, second.instance_id,
            second.max_concurrent) == ("one", 2, "two", 5)
    assert first.host == socket.gethostname() and first.pid == os.getpid()
    assert first.library_version == pyscheduler.__version__
    assert first.started_at_ms == first.last_heartbeat_ms == int(clock.time() * 1000)


def test_each_heartbeat_carries_the_jobs_running_there(fake_clock, schedulers):
    # Given a scheduler with a run in flight
    clock = fake_clock
    backend = MemoryBackend(clock)
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = schedulers.stepped(clock, backend, instance_id="busy")
    scheduler.register(Job("long", IntervalSchedule(INTERVAL, start_at=START), recorder))
    scheduler.start(background=False)
    clock.advance(INTERVAL)
    scheduler.refresh_leases()
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)
    assert scheduler.instances()[0].running == ()  # that heartbeat came before the run
    # When the refresher's next step comes
    clock.advance(INTERVAL)
    scheduler.refresh_leases()
    # Then the record names the job, stamped at that heartbeat
    (info,) = scheduler.instances()
    assert info.running == ("long",)
    assert info.last_heartbeat_ms == int(clock.time() * 1000)
    release.set()
    assert scheduler.wait_idle(WAIT)
    clock.advance(INTERVAL)
    scheduler.refresh_leases()
    assert scheduler.instances()[0].running == ()


def test_stop_removes_the_record_at_once(fake_clock, schedulers):
    clock = fake_clock
    backend = MemoryBackend(clock)
    leaving = schedulers.stepped(clock, backend, instance_id="leaving")
    staying = schedulers.stepped(clock, backend, instance_id="staying")
    leaving.start(background=False)
    staying.start(background=False)
    leaving.stop()
    assert ids(staying.instances()) == ["staying"]
    assert leaving.instances() == []


def test_a_scheduler_abandoned_without_stop_disappears_after_the_ttl(fake_clock, schedulers):
    # Given two schedulers, one of which stops heartbeating (as a crashed process would)
    clock = fake_clock
    backend = MemoryBackend(clock)
    crashed = schedulers.stepped(clock, backend, instance_id="crashed")
    alive = schedulers.stepped(clock, backend, instance_id="alive")
    crashed.start(background=False)
    alive.start(background=False)
    # When time passes while only the other one's refresher steps
    for _ in range(TTL // INTERVAL - 1):
        clock.advance(INTERVAL)
        alive.refresh_leases()
    clock.advance(INTERVAL - 0.001)
    assert ids(alive.instances()) == ["alive", "crashed"]  # within its TTL: still listed
    clock.advance(0.001)
    # Then it is gone one lock_ttl after its last heartbeat
    assert ids(alive.instances()) == ["alive"]


def test_the_refresher_thread_sends_the_heartbeats(fake_clock, schedulers):
    # Given a started scheduler with its threads, on a fake clock
    clock = fake_clock
    scheduler = schedulers.stepped(clock, MemoryBackend(clock), instance_id="threaded")
    scheduler.start()
    (first,) = scheduler.instances()
    # When a refresh interval passes
    clock.advance(INTERVAL)
    # Then the refresher thread heartbeats (no step of the test's)
    deadline = time.monotonic() + WAIT
    while scheduler.instances()[0].last_heartbeat_ms == first.last_heartbeat_ms:
        assert time.monotonic() < deadline, "no heartbeat from the refresher thread"
        time.sleep(0.005)
    assert scheduler.instances()[0].last_heartbeat_ms == first.last_heartbeat_ms + INTERVAL * 1000


class CountingBackend(MemoryBackend):
    """Counts heartbeats and lease refreshes; heartbeats fail while ``failing``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.heartbeats = self.refreshes = 0
        self.failing = False

    def heartbeat(self, info: InstanceInfo, ttl_ms: int) -> list[InstanceInfo]:
        self.heartbeats += 1
        if self.failing:
            raise pyscheduler.BackendUnavailableError("heartbeats fail in this test")
        return super().heartbeat(info, ttl_ms)

    def refresh(self, leases: Any, lease_ms: int) -> list[bool]:
        self.refreshes += 1
        return super().refresh(leases, lease_ms)


def test_one_heartbeat_per_interval_however_many_jobs(fake_clock, schedulers):
    clock = fake_clock
    backend = CountingBackend(clock)
    scheduler = schedulers.stepped(clock, backend)
    for n in range(200):
        scheduler.register(Job(f"job-{n}", IntervalSchedule(3600, start_at=START), Recorder()))
    scheduler.start(background=False)
    assert backend.heartbeats == 1  # at start
    for _ in range(5):
        scheduler.refresh_leases()  # not due yet: nothing sent
        clock.advance(INTERVAL)
        scheduler.refresh_leases()
    assert backend.heartbeats == 6
    # with the TTL of a lease: the record lasts as long as a lease refreshed with it
    (info,) = backend.instances()
    clock.advance(TTL - 0.001)
    assert backend.instances() == [info]
    clock.advance(0.001)
    assert backend.instances() == []


def test_a_failed_heartbeat_is_logged_and_disturbs_no_lease(fake_clock, caplog, schedulers):
    # Given a scheduler with a run in flight, on a backend whose heartbeats fail
    clock = fake_clock
    backend = CountingBackend(clock)
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = schedulers.stepped(clock, backend, instance_id="unlucky")
    scheduler.register(Job("long", IntervalSchedule(60, start_at=START), recorder))
    scheduler.start(background=False)
    clock.advance(60)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)
    backend.failing = True
    # When several refresh intervals pass, past the lease's TTL
    with caplog.at_level(logging.ERROR, logger="pyscheduler"):
        for _ in range(5):
            clock.advance(INTERVAL)
            assert scheduler.refresh_leases() <= INTERVAL
    # Then each interval refreshed the lease and tried one heartbeat, which was logged
    assert backend.refreshes == 5 and backend.heartbeats == 1 + 5
    assert not recorder.contexts[0].cancelled
    assert caplog.text.count("heartbeat failed") == 5
    # And the record comes back at the first heartbeat that gets through
    assert scheduler.instances() == []  # expired meanwhile
    backend.failing = False
    clock.advance(INTERVAL)
    scheduler.refresh_leases()
    assert ids(scheduler.instances()) == ["unlucky"]
    release.set()


class NoInstancesBackend(MemoryBackend):
    """A backend that inherits Backend's defaults for live instances."""

    heartbeat = Backend.heartbeat  # type: ignore[assignment]
    instances = Backend.instances  # type: ignore[assignment]
    leave = Backend.leave  # type: ignore[assignment]


class OlderBackend:
    """A backend written before live instances: no heartbeat, instances or leave at all."""

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        if name in ("heartbeat", "instances", "leave"):
            raise AttributeError(name)
        return getattr(self._backend, name)


@pytest.mark.parametrize("make", [NoInstancesBackend, lambda clock: OlderBackend(
    MemoryBackend(clock))], ids=["defaults", "duck-typed"])
def test_a_backend_without_live_instances_warns_once_and_runs_its_jobs(fake_clock, caplog,
                                                                      schedulers, make):
    clock = fake_clock
    recorder = Recorder()
    scheduler = schedulers(Scheduler(make(clock), config=SchedulerConfig(
        lock_ttl=TTL, lock_refresh_interval=INTERVAL), clock=clock))
    scheduler.register(Job("j", IntervalSchedule(60, start_at=START), recorder))
    with caplog.at_level(logging.WARNING, logger="pyscheduler"):
        scheduler.start(background=False)
        for _ in range(3):
            clock.advance(INTERVAL)
            scheduler.refresh_leases()
        clock.advance(60)
        scheduler.run_pending()
        assert scheduler.wait_idle(WAIT)
        scheduler.stop()
    assert caplog.text.count("live instances are unavailable") == 1
    assert "error" not in caplog.text.lower()
    assert [call[0] for call in recorder.calls] == ["j"]


def test_instances_raises_on_a_backend_without_them(fake_clock, schedulers):
    scheduler = schedulers.stepped(fake_clock, NoInstancesBackend(fake_clock))
    scheduler.start(background=False)
    with pytest.raises(NotImplementedError, match="NoInstancesBackend"):
        scheduler.instances()


def test_a_forked_copy_does_not_heartbeat_for_its_parent(fake_clock, schedulers, monkeypatch):
    # Given a started scheduler
    clock = fake_clock
    backend = CountingBackend(clock)
    scheduler = schedulers.stepped(clock, backend, instance_id="parent")
    scheduler.start(background=False)
    assert backend.heartbeats == 1
    # When its copy in another process (another pid) steps the refresher
    with monkeypatch.context() as patch:
        patch.setattr(os, "getpid", lambda: -1)
        clock.advance(INTERVAL)
        scheduler.refresh_leases()
    # Then nothing was sent
    assert backend.heartbeats == 1
    # (and the original, back in its own process, goes on)
    clock.advance(INTERVAL)
    scheduler.refresh_leases()
    assert backend.heartbeats == 2


@pytest.mark.redis
def test_schedulers_on_one_redis_see_each_other_and_leave_when_stopped(redis_server,
                                                                       schedulers):
    def started(instance_id: str) -> Scheduler:
        scheduler = schedulers(Scheduler(
            RedisBackend.from_url(redis_server.url, key_prefix="live"),
            config=SchedulerConfig(instance_id=instance_id, lock_ttl=2,
                                   lock_refresh_interval=0.2)))
        scheduler.start()
        return scheduler

    one, two = started("one"), started("two")
    assert ids(one.instances()) == ids(two.instances()) == ["one", "two"]
    # The refresher threads keep the records fresh
    beat = two.instances()[1].last_heartbeat_ms
    deadline = time.monotonic() + WAIT
    while two.instances()[1].last_heartbeat_ms == beat:
        assert time.monotonic() < deadline, "no heartbeat from the refresher thread"
        time.sleep(0.02)
    one.stop()
    assert ids(two.instances()) == ["two"]
