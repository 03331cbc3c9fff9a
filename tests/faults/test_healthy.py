"""Scenarios without a fault: the group's guarantees when everything works, under load,
with skewed clocks, across restarts of instances and an outage of the whole group."""

from __future__ import annotations

import time

import pytest

from .checker import Gap
from .harness import aligned, scaled
from .spec import JobSpec

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.faults]


def test_baseline_three_instances_run_each_occurrence_once(make_cluster, repetition):
    # Given 3 instances sharing 10 interval jobs every 0.3 s
    cluster = make_cluster()
    every = 0.3
    start = aligned(every)
    jobs = [JobSpec("tick", count=10, every=every, start_at=start)]
    cluster.spawn_all(["a", "b", "c"], jobs)

    # When they run through a window of several seconds
    end = start + scaled(4.0)
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["scheduled_ms"] >= last_ms, "the window's end", count=10)

    # Then every rule holds, with no fault to excuse anything
    cluster.check(jobs, (start, end))
    assert len({run.instance for run in cluster.runs()}) == 3


def test_500_jobs_on_3_instances(make_cluster, repetition):
    # Given 3 instances sharing 500 jobs every 2 s (250 runs a second on 2 CPUs: a lag past
    # the interval would coalesce an occurrence away)
    cluster = make_cluster()
    start = aligned(2.0, lead=3.0)
    jobs = [JobSpec("bulk", count=500, every=2.0, start_at=start)]
    cluster.spawn_all(["a", "b", "c"], jobs)

    # When they run through a window of several seconds
    end = start + scaled(6.0)
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["scheduled_ms"] >= last_ms, "the window's end", count=500)

    # Then each of the 2,000 occurrences ran once, on time
    cluster.check(jobs, (start, end), lag_bound=1.5)


def test_clocks_5_s_apart_change_nothing(make_cluster, repetition):
    # Given instances whose clocks are 5 s slow, right and 5 s fast, with interval and cron
    # jobs (the next test has the fast one register them)
    cluster = make_cluster()
    every = 0.3
    start = aligned(every)
    jobs = [JobSpec("tick", count=4, every=every, start_at=start),
            JobSpec("cron", count=2, cron="* * * * * *")]
    cluster.spawn("right", jobs)
    cluster.spawn("slow", jobs, skew=-5.0, wait=False)
    cluster.spawn("fast", jobs, skew=5.0)
    cluster.wait_ready("slow")

    # When they run through a window
    end = start + scaled(4.0)
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["job"].startswith("tick") and e["scheduled_ms"] >= last_ms,
                       "the window's end", count=4)

    # Then each occurrence ran once, none before its time by the real clock (the backend's),
    # and every instance ran some
    cluster.check(jobs, (start, end))
    assert {run.instance for run in cluster.runs()} == {"right", "slow", "fast"}


def test_a_fast_clock_registering_first_skips_nothing(make_cluster, repetition):
    cluster = make_cluster()
    every = 0.3
    start = aligned(every, lead=2.0)
    jobs = [JobSpec("tick", count=2, every=every, start_at=start)]
    cluster.spawn("fast", jobs, skew=5.0)
    cluster.spawn("right", jobs)

    # Then every occurrence from its registration on runs, once
    end = start + scaled(6.0)
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["scheduled_ms"] >= last_ms, "the window's end", count=2)
    cluster.check(jobs, (start, end))


def test_a_rolling_restart_across_fire_instants_misses_and_repeats_nothing(make_cluster,
                                                                          repetition):
    # Given 3 instances running jobs every second
    cluster = make_cluster()
    start = aligned(1.0)
    jobs = [JobSpec("tick", count=3, every=1.0, start_at=start)]
    cluster.spawn_all(["a", "b", "c"], jobs)
    cluster.wait_start(lambda e: True, "the first fire", count=3)

    # When each instance in turn is stopped and replaced, across the next fire instants
    for name in ("a", "b", "c"):
        cluster.terminate(name)
        cluster.spawn(f"{name}2", jobs)

    # Then no occurrence was missed or run twice, and nothing is excused (a stop between
    # runs is no fault)
    end = time.time() + scaled(2.0)
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["scheduled_ms"] >= last_ms, "the window's end", count=3)
    cluster.check(jobs, (start, end))


def test_the_whole_group_down_for_several_intervals_coalesces_or_skips(make_cluster,
                                                                       repetition):
    # Given 2 instances, jobs every 0.3 s that coalesce missed occurrences, and jobs that
    # skip those later than 50 ms
    cluster = make_cluster()
    every = 0.3
    start = aligned(every)
    jobs = [JobSpec("coalesce", count=2, every=every, start_at=start),
            JobSpec("skip", count=2, every=every, start_at=start, misfire_grace=0.05)]
    cluster.spawn_all(["a", "b"], jobs)
    cluster.wait_start(lambda e: True, "runs before", count=8)

    # When the whole group is down for six intervals (from when the last one stopped: "b"
    # runs what is due while "a" stops)
    first_stop = time.time()
    cluster.terminate("a")
    cluster.terminate("b")
    down = time.time()
    time.sleep(6 * every)  # the injected fault: an outage
    cluster.spawn_all(["a2", "b2"], jobs)
    up = min(cluster.wait_ready(name)["wall"] for name in ("a2", "b2"))

    # Then each job ran at most one of the occurrences missed, the skipping ones only if
    # within their grace, and everything after on time
    end = up + scaled(2.0)
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["scheduled_ms"] >= last_ms, "the window's end", count=4)
    # (occurrences may be missed from the first stop on; none ran while all were down)
    cluster.check(jobs, (start, end), gaps=[Gap(first_stop, up), Gap(down, up, coalesce=True)],
                  allowed_logs=("occurrence skipped",))
    for run in cluster.runs():
        if run.job.startswith("skip") and down < run.scheduled_ms / 1000 < up:
            assert run.wall - run.scheduled_ms / 1000 <= 0.05 + 0.05, run
