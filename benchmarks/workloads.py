"""The workloads, as run inside a worker process against one adapter.

Each function registers the jobs, starts the system, measures, stops it, and returns the raw
result: the recorder's hits plus resource figures. Turning hits into executed, duplicates
and lateness is left to the runner (:func:`benchmarks.measure.summarize`), which also merges
the hits of the processes of a ``cluster`` run.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from .adapters import POOL_SIZE, Adapter
from .measure import Recorder, cpu_seconds, current_rss_mb, peak_rss_mb
from .plan import RunSpec, first_fire_ms

__all__ = ["BURST_TIMEOUT_SECONDS", "IDLE_EVERY_SECONDS", "run_workload"]

#: a burst that has not run every job this long after the due instant (plus the ideal time
#: the pool needs for the handlers' work) is cut short, its missing runs counted.
BURST_TIMEOUT_SECONDS = 15.0

#: interval of the jobs that must not run (registration and idle workloads): an hour.
IDLE_EVERY_SECONDS = 3600.0

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Result = dict[str, object]


def run_workload(spec: RunSpec, adapter: Adapter, recorder: Recorder) -> Result:
    """Run ``spec.workload`` and return its raw result."""
    runners: dict[str, Callable[[RunSpec, Adapter, Recorder], Result]] = {
        "interval": _timed,
        "cluster": _timed,
        "burst": _timed,
        "registration": _registration,
        "idle": _idle,
    }
    return runners[spec.workload](spec, adapter, recorder)


def _instant(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _sleep_until(instant: float) -> None:
    while True:
        left = instant - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def _timed(spec: RunSpec, adapter: Adapter, recorder: Recorder) -> Result:
    """interval / cluster / burst: jobs due from ``spec.t0_ms`` on, measured over a window."""
    cpu_before = cpu_seconds()
    clock = time.perf_counter()
    if spec.workload == "burst":
        recorder.expect_distinct(spec.jobs)
        for index in range(spec.jobs):
            adapter.add_once(index, _instant(first_fire_ms(spec, index)))
    else:
        for index in range(spec.jobs):
            adapter.add_interval(index, spec.every, _instant(first_fire_ms(spec, index)))
    adapter.start()
    setup_s = time.perf_counter() - clock
    ready_ts = time.time()
    setup_cpu_s = cpu_seconds() - cpu_before

    t0 = first_fire_ms(spec, 0) / 1000
    if spec.workload == "burst":
        ideal = spec.jobs * spec.work_ms / 1000 / POOL_SIZE
        recorder.end = t0 + BURST_TIMEOUT_SECONDS + 2 * ideal
    else:
        recorder.end = t0 + spec.duration
    _sleep_until(t0)
    cpu_start = cpu_seconds()
    if spec.workload == "burst":
        recorder.done.wait(timeout=max(0.0, recorder.end - time.time()))
        window_end = min(time.time(), recorder.end)
    else:
        _sleep_until(recorder.end)
        window_end = recorder.end
    cpu_s = cpu_seconds() - cpu_start
    hits = list(recorder.hits)

    clock = time.perf_counter()
    adapter.stop()
    stop_s = time.perf_counter() - clock
    return {
        "hits": hits,
        "window_end": window_end,
        "cpu_s": cpu_s,
        "setup_s": setup_s,
        "setup_cpu_s": setup_cpu_s,
        "ready_ts": ready_ts,
        "stop_s": stop_s,
        "rss_peak_mb": peak_rss_mb(),
        "makespan_s": (max(t for _, t, _ in hits) - t0) if hits else None,
    }


def _hour_away_jobs(spec: RunSpec, adapter: Adapter) -> None:
    first = _instant(round((time.time() + IDLE_EVERY_SECONDS) * 1000))
    for index in range(spec.jobs):
        adapter.add_interval(index, IDLE_EVERY_SECONDS, first)


def _registration(spec: RunSpec, adapter: Adapter, recorder: Recorder) -> Result:
    """Register N jobs (not started): time, CPU and memory; then time start() and stop()."""
    rss_base = current_rss_mb()
    cpu_before = cpu_seconds()
    clock = time.perf_counter()
    _hour_away_jobs(spec, adapter)
    register_s = time.perf_counter() - clock
    register_cpu_s = cpu_seconds() - cpu_before
    rss_peak = peak_rss_mb()
    rss_after = current_rss_mb()

    clock = time.perf_counter()
    adapter.start()
    start_s = time.perf_counter() - clock
    clock = time.perf_counter()
    adapter.stop()
    stop_s = time.perf_counter() - clock
    return {
        "hits": list(recorder.hits),
        "register_s": register_s,
        "cpu_s": register_cpu_s,
        "rss_base_mb": rss_base,
        "rss_peak_mb": rss_peak,
        "rss_growth_mb": rss_after - rss_base,
        "start_s": start_s,
        "stop_s": stop_s,
        "rss_peak_after_start_mb": peak_rss_mb(),
    }


def _idle(spec: RunSpec, adapter: Adapter, recorder: Recorder) -> Result:
    """N jobs an hour away: CPU over ``spec.duration`` seconds after a warm-up, per minute."""
    clock = time.perf_counter()
    _hour_away_jobs(spec, adapter)
    adapter.start()
    setup_s = time.perf_counter() - clock
    time.sleep(spec.warmup)
    cpu_before = cpu_seconds()
    clock = time.perf_counter()
    time.sleep(spec.duration)
    elapsed = time.perf_counter() - clock
    cpu_s = cpu_seconds() - cpu_before
    clock = time.perf_counter()
    adapter.stop()
    stop_s = time.perf_counter() - clock
    return {
        "hits": list(recorder.hits),
        "cpu_s": cpu_s,
        "cpu_s_per_min": cpu_s / elapsed * 60,
        "setup_s": setup_s,
        "stop_s": stop_s,
        "rss_peak_mb": peak_rss_mb(),
    }
