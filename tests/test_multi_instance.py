"""Several scheduler processes on one real redis-server, with faults injected by signals.

Each scheduler instance is a separate OS process (``tests/procs/worker.py``) that appends
every start as (job, scheduled_ms, fence, attempt, kind, pid) to a shared history file; the
tests inject faults (SIGKILL, SIGSTOP, SIGTERM, a Redis restart, garbage under our keys) and
check the history afterwards. These run in real time on Redis's clock: waits poll the history
for the expected event with generous upper bounds, never sleep through a schedule.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from pyscheduler import BackendUnavailableError, RedisBackend, Scheduler, SchedulerConfig

from .redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BOUND = 60.0  # generous upper bound, in seconds, for any awaited event


class Group:
    """Scheduler processes sharing one Redis and one history file."""

    def __init__(self, server: RedisServer, directory: Path, prefix: str = "grp") -> None:
        self.server = server
        self.history_path = directory / "history.jsonl"
        self.history_path.touch()
        self.prefix = prefix
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: Any) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "tests.procs.worker", "--url", self.server.url,
                   "--prefix", self.prefix, "--history", str(self.history_path),
                   *map(str, args)]
        process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
        self.processes.append(process)
        self.wait_for(lambda e: e["event"] == "ready" and e["pid"] == process.pid,
                      f"process {process.pid} ready")
        return process

    def first_start_on_two(self, *args: Any) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
        """Spawn two processes with ``args`` and wait for the first start of any job.

        :returns: that start, and the process that holds it.
        """
        first, second = self.spawn(*args), self.spawn(*args)
        (start,) = self.wait_for(lambda e: e["event"] == "start", "the first start")
        return start, first if start["pid"] == first.pid else second

    def events(self) -> list[dict[str, Any]]:
        lines = self.history_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def starts(self, job: Optional[str] = None) -> list[dict[str, Any]]:
        return [e for e in self.events()
                if e["event"] == "start" and (job is None or e["job"] == job)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                 count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + BOUND
        while True:
            found = [e for e in self.events() if predicate(e)]
            if len(found) >= count:
                return found
            for process in self.processes:
                if process.poll() not in (None, 0, -signal.SIGKILL, -signal.SIGTERM):
                    raise AssertionError(f"a worker died: {process.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def terminate(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(BOUND) == 0, process.stderr.read().decode()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(BOUND)
            if process.stderr:
                process.stderr.close()

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "error"]


@pytest.fixture
def group(redis_server_factory, tmp_path):
    group = Group(redis_server_factory(), tmp_path)
    yield group
    group.close()


def aligned(every: float, lead: float = 1.5) -> float:
    """An epoch time at least ``lead`` seconds ahead, on a multiple of ``every``."""
    return math.ceil((time.time() + lead) / every) * every


def test_three_processes_run_every_occurrence_exactly_once(group):
    # Given 100 interval jobs every 0.5 s, with 1 ms handlers, on 3 processes started at
    # staggered offsets (so they tick out of phase with each other)
    every, window = 0.5, 10.0
    start_at = aligned(every, lead=3.0)
    workers = []
    for offset in (0.0, 0.17, 0.31):
        time.sleep(offset)  # staggering the starts is the point, not a wait for a schedule
        workers.append(group.spawn("--jobs", 100, "--every", every, "--start-at", start_at,
                                   "--handler-ms", 1))

    # When they run through a 10 s window
    expected = {(f"job-{n}", round((start_at + k * every) * 1000)) for n in range(100)
                for k in range(1, int(window / every) + 1)}
    last_ms = max(ms for _, ms in expected)
    group.wait_for(lambda e: e["event"] == "start" and e["scheduled_ms"] == last_ms,
                   "the last occurrence of the window", count=100)
    for worker in workers:
        group.terminate(worker)

    # Then every occurrence in the window ran exactly once, spread over the processes
    starts = [(e["job"], e["scheduled_ms"]) for e in group.starts()]
    counts = Counter(starts)
    assert {occ for occ in expected if counts[occ] != 1} == set()
    assert max(counts.values()) == 1
    assert len({e["pid"] for e in group.starts()}) >= 2
    # and fences strictly increase per job, in the order of the occurrences
    by_job = defaultdict(list)
    for e in group.starts():
        by_job[e["job"]].append((e["scheduled_ms"], e["fence"]))
    for job, runs in by_job.items():
        fences = [fence for _, fence in sorted(runs)]
        assert fences == sorted(set(fences)), job
    assert group.errors() == []


def test_kill_9_of_the_holder_is_recovered_as_attempt_2_after_the_lease(group):
    # Given two processes and a long one-time job
    long_at = time.time() + 1.0
    args = ("--long-job", "long", "--long-at", long_at, "--long-seconds", 60,
            "--lock-ttl", 2, "--refresh", 0.5)
    start, holder = group.first_start_on_two(*args)

    # When the process running it is killed with SIGKILL
    holder.kill()
    holder.wait(BOUND)

    # Then the other process re-runs the same occurrence as attempt 2 with a higher fence
    (recovered,) = group.wait_for(lambda e: e["event"] == "start" and e["attempt"] == 2,
                                  "the recovery")
    assert recovered["pid"] != holder.pid
    assert recovered["scheduled_ms"] == start["scheduled_ms"]
    assert recovered["kind"] == "recovery"
    assert recovered["fence"] > start["fence"]
    assert recovered["t"] - start["t"] >= 1.0  # not before the lease could have expired


def test_sigstop_past_the_lease_means_takeover_and_the_thawed_result_is_not_recorded(group):
    # Given two processes and a long job (2 s leases)
    long_at = time.time() + 1.0
    args = ("--long-job", "long", "--long-at", long_at, "--long-seconds", 8,
            "--lock-ttl", 2, "--refresh", 0.5)
    start, holder = group.first_start_on_two(*args)

    # When the holder is frozen for twice the lease, then thawed
    holder.send_signal(signal.SIGSTOP)
    try:
        (takeover,) = group.wait_for(lambda e: e["event"] == "start" and e["attempt"] == 2,
                                     "the takeover")
    finally:
        holder.send_signal(signal.SIGCONT)

    # Then the other process took over with a higher fence...
    assert takeover["pid"] != holder.pid and takeover["fence"] > start["fence"]
    # ...the thawed holder's token was cancelled, and its result was not recorded (a run
    # whose lease was lost never is: the takeover's is the occurrence's)
    (end,) = group.wait_for(lambda e: e["event"] == "end" and e["pid"] == holder.pid,
                            "the old holder's end")
    assert end["completed"] is False and "lease lost" in end["reason"]
    group.wait_for(lambda e: e["event"] == "log" and e["pid"] == holder.pid
                   and "result is not recorded" in e["msg"], "the dropped result")


def test_sigstop_shorter_than_the_refresh_margin_changes_nothing(group):
    long_at = time.time() + 1.0
    args = ("--long-job", "long", "--long-at", long_at, "--long-seconds", 2.5,
            "--lock-ttl", 3, "--refresh", 0.5)
    start, holder = group.first_start_on_two(*args)

    holder.send_signal(signal.SIGSTOP)
    time.sleep(0.8)  # the injected fault: a pause well inside the lease
    holder.send_signal(signal.SIGCONT)

    (end,) = group.wait_for(lambda e: e["event"] == "end", "the run's end")
    assert end["pid"] == holder.pid and end["completed"] is True
    assert len(group.starts("long")) == 1


def test_redis_restart_is_survived_without_rerunning_an_occurrence(group):
    # Given two processes running 20 jobs every 0.5 s
    every = 0.5
    start_at = aligned(every)
    args = ("--jobs", 20, "--every", every, "--start-at", start_at, "--tick", 0.1)
    workers = [group.spawn(*args), group.spawn(*args)]
    group.wait_for(lambda e: e["event"] == "start", "runs before the restart", count=60)

    # When Redis restarts and loses every key
    group.server.restart()
    restarted_at = time.time()
    fences_before = {e["job"]: e["fence"] for e in group.starts()}

    # Then the schedulers rebuild their jobs and go on
    group.wait_for(lambda e: e["event"] == "start" and e["t"] > restarted_at + 1,
                   "runs after the restart", count=40)
    for worker in workers:
        group.terminate(worker)
    starts = group.starts()
    counts = Counter((e["job"], e["scheduled_ms"]) for e in starts)
    assert max(counts.values()) == 1, [occ for occ, n in counts.items() if n > 1]
    for e in starts:
        if e["t"] > restarted_at + 1:
            assert e["fence"] > max(fences_before.values())


def test_sigterm_hands_the_running_occurrence_over_at_once(group):
    # Given two processes, long (10 s) leases, and a job every 6 s that runs 2.5 s
    every = 6.0
    long_at = aligned(every, lead=1.0)
    args = ("--long-job", "long", "--long-at", long_at, "--long-every", every,
            "--long-seconds", 2.5, "--lock-ttl", 10, "--refresh", 2, "--stop-timeout", 0.3)
    start, holder = group.first_start_on_two(*args)

    # When the holder gets SIGTERM mid-run
    terminated_at = time.time()
    group.terminate(holder)

    # Then the other process recovers the occurrence well before the 10 s lease runs out
    (recovered,) = group.wait_for(lambda e: e["event"] == "start" and e["attempt"] == 2,
                                  "the recovery")
    assert recovered["pid"] != holder.pid
    assert recovered["scheduled_ms"] == start["scheduled_ms"]
    assert recovered["t"] - terminated_at < 8  # a lease expiry would take 10 s
    # and the next occurrence runs on time
    next_ms = start["scheduled_ms"] + round(every * 1000)
    (following,) = group.wait_for(lambda e: e["event"] == "start"
                                  and e["scheduled_ms"] == next_ms, "the next occurrence")
    assert following["t"] * 1000 - next_ms < 3000  # on time, give or take a loaded machine


@pytest.mark.parametrize("grace", [None, 0.05])
def test_whole_group_down_coalesces_or_skips_never_bursts(group, grace):
    # Given one process running a job every 0.5 s
    every_ms = 500
    extra = () if grace is None else ("--misfire-grace", grace)
    args = ("--jobs", 1, "--every", every_ms / 1000, "--start-at", aligned(every_ms / 1000),
            *extra)
    worker = group.spawn(*args)
    group.wait_for(lambda e: e["event"] == "start", "two runs", count=2)

    # When the whole group is down for several intervals, then comes back
    group.terminate(worker)
    last_before = max(e["scheduled_ms"] for e in group.starts())
    time.sleep(3.2)  # the injected fault: an outage of six intervals
    back = group.spawn(*args)
    runs_after = group.wait_for(lambda e: e["event"] == "start" and e["pid"] == back.pid,
                                "runs after the outage", count=3)

    # Then the missed occurrences ran at most once, never as a burst of catch-up runs
    first_back = runs_after[0]
    caught_up = [e for e in runs_after if e["scheduled_ms"] <= first_back["t"] * 1000]
    assert len(caught_up) <= 1
    scheduled = [e["scheduled_ms"] for e in runs_after]
    assert all(b - a == every_ms for a, b in zip(scheduled[1:], scheduled[2:]))
    if grace is None:
        # coalesced: one run, at the latest missed occurrence, not the first
        (run,) = caught_up
        assert run["scheduled_ms"] >= last_before + 5 * every_ms
    else:
        # past its grace: skipped (logged), or run only if within the grace
        skipped = [e for e in group.events() if e["event"] == "log"
                   and "skipped" in e["msg"] and e["pid"] == back.pid]
        if caught_up:
            assert caught_up[0]["t"] * 1000 - caught_up[0]["scheduled_ms"] <= grace * 1000 + 50
        else:
            assert skipped


def test_management_from_one_instance_is_seen_by_the_others(group, schedulers):
    # Given two processes running 3 jobs every 0.3 s, and an operator's scheduler
    every, tick = 0.3, 0.2
    args = ("--jobs", 3, "--every", every, "--start-at", aligned(every), "--tick", tick)
    group.spawn(*args)
    group.spawn(*args)
    operator = schedulers(Scheduler(
        RedisBackend.from_url(group.server.url, key_prefix=group.prefix),
        config=SchedulerConfig(tick_interval=tick, lock_ttl=2, lock_refresh_interval=0.5)))
    operator.start()
    group.wait_for(lambda e: e["event"] == "start" and e["job"] == "job-0", "job-0 runs")

    # When job-0 is paused, job-1 run now, and job-2 removed
    operator.pause("job-0")
    operator.run_now("job-1")
    operator.remove("job-2")
    changed_at = time.time()

    # Then within a tick: job-1 gets a manual run and the others stop running
    group.wait_for(lambda e: e["event"] == "start" and e["job"] == "job-1"
                   and e["kind"] == "manual", "job-1's manual run")
    group.wait_for(lambda e: e["event"] == "start" and e["job"] == "job-1"
                   and e["t"] > changed_at + 1.5, "job-1 still running later")
    settled = changed_at + every + tick + 0.3
    for job in ("job-0", "job-2"):
        assert [e for e in group.starts(job) if e["t"] > settled] == [], job
    assert "job-2" not in operator.backend.job_names()

    # And resuming job-0 brings it back
    operator.resume("job-0")
    resumed_at = time.time()
    group.wait_for(lambda e: e["event"] == "start" and e["job"] == "job-0"
                   and e["t"] > resumed_at, "job-0 after resume")


def test_garbage_under_our_keys_resets_the_job_and_running_goes_on(group):
    every = 0.3
    args = ("--jobs", 2, "--every", every, "--start-at", aligned(every))
    group.spawn(*args)
    group.wait_for(lambda e: e["event"] == "start" and e["job"] == "job-1", "job-1 runs")
    client = group.server.client()
    try:
        client.delete(f"{{{group.prefix}}}:job:job-1")
        client.set(f"{{{group.prefix}}}:job:job-1", b"\x80\x04garbage")
        broken_at = time.time()
    finally:
        client.close()
    group.wait_for(lambda e: e["event"] == "start" and e["job"] == "job-1"
                   and e["t"] > broken_at + 0.5, "job-1 running again")
    group.wait_for(lambda e: e["event"] == "start" and e["job"] == "job-0"
                   and e["t"] > broken_at + 0.5, "job-0 unaffected")


def test_a_wrong_password_is_a_clear_error_at_start(redis_server_factory, schedulers):
    server = redis_server_factory(password="right")
    backend = RedisBackend.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
    scheduler = schedulers(Scheduler(backend))
    with pytest.raises(BackendUnavailableError) as info:
        scheduler.start()
    assert f"127.0.0.1:{server.port}" in str(info.value)
    assert "auth" in str(info.value).lower()

