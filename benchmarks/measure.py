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
from collections import Counter
from typing import Optional, Sequence

from .plan import COUNT_MARGIN_SECONDS, RunSpec, first_fire_ms

__all__ = [
    "Recorder",
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


def summarize(spec: RunSpec, hits: Sequence[tuple[int, float, Optional[float]]],
              window_end: Optional[float] = None) -> dict[str, object]:
    """Executed vs expected occurrences, duplicates and lateness of one run.

    ``interval``/``cluster``: job ``i`` is intended to fire at ``first_i + k * every`` for
    ``k = 0, 1, ...``; expected are the occurrences intended in ``[first_i, window_end -
    COUNT_MARGIN_SECONDS]``. An execution at ``t`` belongs to the latest intended time at or
    before ``t``, so a run that coalesces missed occurrences counts once, for the latest of
    them. No system here decides due-ness on another clock than the one the handler reads
    (Redis ``TIME`` is this host's clock), so none can start an occurrence early; only a run
    before a job's *first* intended time has a negative lateness (counted as ``early``).
    ``burst``: every job is intended at ``t0`` once. Other workloads expect nothing.

    Attribution by start time is exact while runs are less than one interval late. A run
    later than that (an overloaded system) is attributed to a later occurrence, which then
    shows as a duplicate if that occurrence also ran. ``claimed_duplicates`` counts, where the
    system names the occurrence it runs (pyscheduler), the runs of the same job and named
    occurrence beyond the first: a real duplicate, whatever the lateness.
    """
    counts: Counter[tuple[int, int]] = Counter()
    lateness: list[float] = []
    expected = 0
    if spec.workload in ("interval", "cluster"):
        if window_end is None:
            raise ValueError("an interval run needs its window end")
        cutoff = window_end - COUNT_MARGIN_SECONDS
        firsts = [first_fire_ms(spec, i) / 1000 for i in range(spec.jobs)]
        for first in firsts:
            if first <= cutoff:
                expected += math.floor((cutoff - first) / spec.every + 1e-9) + 1
        for index, started, _ in hits:
            first = firsts[index]
            k = max(0, math.floor((started - first) / spec.every))
            intended = first + k * spec.every
            if intended > cutoff + 1e-9:
                continue
            counts[(index, k)] += 1
            lateness.append(started - intended)
    elif spec.workload == "burst":
        expected = spec.jobs
        intended = first_fire_ms(spec, 0) / 1000
        for index, started, _ in hits:
            counts[(index, 0)] += 1
            lateness.append(started - intended)
    else:
        counts.update((index, 0) for index, _, _ in hits)
    claimed = Counter((index, at) for index, _, at in hits if at is not None)
    lateness.sort()
    early = sum(1 for value in lateness if value < 0)
    return {
        "expected": expected,
        "executed": len(counts),
        "duplicates": sum(n - 1 for n in counts.values()),
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
