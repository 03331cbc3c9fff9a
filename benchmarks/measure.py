"""Measuring a run: the recorder every handler calls, process resources, and the statistics.

Every system runs the same handler, :meth:`Recorder.fire`: it notes ``time.time()`` at entry
with the job's index, then sleeps the workload's ``work_ms``. Which occurrence an execution
belongs to, and how late it is, is decided afterwards by :func:`summarize` from the schedule
alone (:func:`~benchmarks.plan.first_fire_ms` plus whole intervals), never from what a
scheduler says it was running.
"""

from __future__ import annotations

import math
import resource
import sys
import threading
import time
from collections import Counter, defaultdict
from typing import Optional, Sequence

from .plan import COUNT_MARGIN_SECONDS, RunSpec, first_fire_ms

__all__ = [
    "Recorder",
    "attribute",
    "cpu_seconds",
    "current_rss_mb",
    "peak_rss_mb",
    "percentile",
    "summarize",
]

class Recorder:
    """The handler of every job of every system.

    Executions that start at or after :attr:`end` are not recorded: an occurrence counts as
    executed when its handler started inside the measurement window.
    """

    def __init__(self, work_ms: float) -> None:
        self.work_seconds = work_ms / 1000
        self.end = math.inf
        self.hits: list[tuple[int, float, Optional[float]]] = []
        self.done = threading.Event()
        self._target: Optional[int] = None
        self._seen: set[int] = set()

    def expect_distinct(self, count: int) -> None:
        """Set :attr:`done` once ``count`` distinct jobs have run (the burst workload)."""
        self._target = count

    def fire(self, index: int, claimed: Optional[float] = None) -> None:
        """Note that job ``index`` started now, then do the work.

        :param claimed: the occurrence the scheduler says it is running (epoch seconds), where
            it says so (pyscheduler's ``ctx.scheduled_at``); used only to cross-check
            duplicates, never for lateness.
        """
        started = time.time()
        if started < self.end:
            # list.append and set.add are atomic: handlers run on many threads at once.
            self.hits.append((index, started, claimed))
            if self._target is not None:
                self._seen.add(index)
                if len(self._seen) >= self._target:
                    self.done.set()
        if self.work_seconds:
            time.sleep(self.work_seconds)


def cpu_seconds() -> float:
    """User plus system CPU time of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """The highest resident set size this process reached so far, in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` is no good in a
    child process there, since Linux carries the parent's peak over fork and exec, so a
    worker would report at least the runner's RSS.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def current_rss_mb() -> float:
    """The resident set size right now, in MiB."""
    try:
        import psutil
    except ImportError:  # Linux without psutil: read it from /proc
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    return float(psutil.Process().memory_info().rss) / 2**20


def percentile(ordered: Sequence[float], pct: float) -> Optional[float]:
    """Nearest-rank percentile of an already sorted sequence (``None`` when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def attribute(starts: Sequence[float], first: float,
              every: Optional[float]) -> tuple[list[tuple[int, float]], int]:
    """Match one job's handler starts to its intended occurrences ``first + k * every``.

    Runs of one job are sequential in every system here, so they match strictly increasing
    occurrences. Each start takes the latest occurrence at or before it that a later start
    did not take (the latest start goes first); a start left with no occurrence is a
    duplicate. A start before ``first`` takes occurrence 0 (negative lateness: early).
    ``every=None``: a one-time job, whose first start is its run and the rest duplicates.

    :returns: ``(k, start)`` of the matched starts, and the number of duplicates.
    """
    if every is None:
        ordered = sorted(starts)
        return [(0, ordered[0])] if ordered else [], max(0, len(ordered) - 1)
    matched: list[tuple[int, float]] = []
    duplicates = 0
    limit = math.inf  # occurrences from here on are taken
    for started in sorted(starts, reverse=True):
        latest = max(0, math.floor((started - first) / every))
        k = latest if latest < limit else int(limit) - 1
        if k < 0:
            duplicates += 1
            continue
        matched.append((k, started))
        limit = k
    return matched, duplicates


def summarize(spec: RunSpec, hits: Sequence[tuple[int, float, Optional[float]]],
              window_end: Optional[float] = None) -> dict[str, object]:
    """Executed vs expected occurrences, duplicates and lateness of one run.

    ``interval``/``cluster``: job ``i`` is intended to fire at ``first_i + k * every`` for
    ``k = 0, 1, ...``; expected are the occurrences intended in ``[first_i, window_end -
    COUNT_MARGIN_SECONDS]``. ``burst``: every job once, at ``t0``. Other workloads expect
    nothing. Starts are matched to occurrences by :func:`attribute`: a run that coalesces
    missed occurrences counts once, for the latest of them, and a run more than one
    interval late is not mistaken for a run of the next occurrence. Every system here
    decides due-ness on the clock the handler reads (Redis ``TIME`` is this host's clock).

    ``duplicates`` are the starts that no occurrence is left for, which start times alone
    prove. ``claimed_duplicates`` counts, where the system names the occurrence it runs
    (pyscheduler's ``ctx.scheduled_at``), the runs of the same job and named occurrence
    beyond the first: it also catches a duplicate that a lagging system's start times
    could hide.
    """
    per_job: dict[int, list[float]] = defaultdict(list)
    for index, started, _ in hits:
        per_job[index].append(started)
    lateness: list[float] = []
    executed = duplicates = expected = 0
    if spec.workload in ("interval", "cluster", "burst"):
        every: Optional[float] = None if spec.workload == "burst" else spec.every
        cutoff = math.inf
        if every is not None:
            if window_end is None:
                raise ValueError("an interval run needs its window end")
            cutoff = window_end - COUNT_MARGIN_SECONDS
        for index in range(spec.jobs):
            first = first_fire_ms(spec, index) / 1000
            if every is None:
                expected += 1
            elif first <= cutoff:
                expected += math.floor((cutoff - first) / every + 1e-9) + 1
            matched, extra = attribute(per_job.get(index, ()), first, every)
            duplicates += extra
            for k, started in matched:
                intended = first + k * (every or 0.0)
                if intended <= cutoff + 1e-9:
                    executed += 1
                    lateness.append(started - intended)
    else:
        executed = len(per_job)
        duplicates = len(hits) - executed
    claimed = Counter((index, at) for index, _, at in hits if at is not None)
    lateness.sort()
    early = sum(1 for value in lateness if value < 0)
    return {
        "expected": expected,
        "executed": executed,
        "duplicates": duplicates,
        "early": early,
        "claimed_duplicates": sum(n - 1 for n in claimed.values()) if claimed else None,
        "lateness_ms": {
            name: None if value is None else round(value * 1000, 2)
            for name, value in (("p50", percentile(lateness, 50)),
                                ("p99", percentile(lateness, 99)),
                                ("max", lateness[-1] if lateness else None),
                                ("min", lateness[0] if lateness else None))
        },
    }
