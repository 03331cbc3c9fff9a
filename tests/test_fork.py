"""Schedulers and ``fork()``: real forks, in fresh interpreters (tests/procs/forking.py).

A scheduler built before a fork and started in each child (a module-level scheduler under
``gunicorn --preload``) must be a separate instance in each child; a started scheduler's copy
in a forked child must say that it runs nothing, loudly, instead of going quiet.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")

ROOT = Path(__file__).resolve().parent.parent
BOUND = 60.0


def run_scenario(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.procs.forking", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=BOUND, check=False)


def history(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.redis
@pytest.mark.slow
def test_a_scheduler_built_before_fork_runs_each_occurrence_once_across_its_children(
        redis_server, tmp_path):
    # Given a scheduler built (not started) in a parent, with one job every 0.5 s on Redis
    every, window = 0.5, 4.0
    start_at = math.ceil((time.time() + 2.0) / every) * every
    path = tmp_path / "history.jsonl"

    # When three forked children each start it, and run until the window's last occurrence ran
    last_ms = round((start_at + window) * 1000)
    result = run_scenario("built-then-forked", "--url", redis_server.url, "--history", path,
                          "--children", 3, "--every", every, "--start-at", start_at,
                          "--last-ms", last_ms)

    # Then every occurrence of the window ran exactly once, fences strictly increasing
    assert result.returncode == 0, result.stderr
    starts = history(path)
    counts = Counter(start["scheduled_ms"] for start in starts)
    expected = {round((start_at + k * every) * 1000) for k in range(1, int(window / every) + 1)}
    assert {ms: counts[ms] for ms in expected if counts[ms] != 1} == {}
    assert max(counts.values()) == 1
    fences = [start["fence"] for start in sorted(starts, key=lambda s: s["scheduled_ms"])]
    assert fences == sorted(set(fences))


def test_the_memory_backend_warns_in_a_forked_child(tmp_path):
    # Given a scheduler on the in-memory backend built in a parent
    start_at = time.time() + 0.5

    # When two forked children start it
    result = run_scenario("built-then-forked", "--history", tmp_path / "history.jsonl",
                          "--children", 2, "--start-at", start_at)

    # Then each child warns that it runs every job on its own, and names the fix
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines()
                if "in-memory backend keeps jobs in this process only" in line]
    assert len(warnings) == 2, result.stderr
    assert all("WARNING" in line and "Redis" in line for line in warnings)


def test_a_started_schedulers_copy_in_a_forked_child_says_it_runs_nothing(tmp_path):
    # Given a started scheduler, when its process forks and the child uses its copy
    path = tmp_path / "history.jsonl"
    result = run_scenario("started-then-forked", "--history", path)

    # Then the child's copy warns once, and every call that would run or show stale data
    # raises an error saying why and what to do; its stop() touches nothing
    assert result.returncode == 0, result.stderr
    child, parent = history(path)
    for call in ("register", "start", "jobs", "get_job", "pause"):
        assert f"{call}(): this scheduler was started in process {parent['pid']}" in child[call]
        assert "start_in_workers" in child[call]
    assert child["stop"] == []
    warnings = [line for line in result.stderr.splitlines() if "is a fork of it" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"{child['pid']} WARNING")
    # and the parent goes on running its jobs
    assert parent["parent_still_runs"] is True
    assert parent["child_status"] == 0
