"""Scenarios without a fault: the group's guarantees when everything works, under load,
with skewed clocks, across restarts of instances and an outage of the whole group."""

from __future__ import annotations

import pytest

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
