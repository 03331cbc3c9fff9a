"""The cost of one ``Scheduler.run_pending()`` pass with no due work, by number of jobs.

The tick keeps a heap of due times, so a pass that finds nothing due should cost the same
with 1,000 jobs as with 100,000. This measures it deterministically: a ``FakeClock`` and
``start(background=False)`` (see the README's "Testing your jobs"), every job's next run
30 days away, the in-memory backend. Two figures per size:

- *pass*: the clock stands still, so the pass neither finds due work nor polls the backend;
- *pass + poll*: the clock moves one ``tick_interval`` before each pass, so each pass also
  asks the backend for due work it does not know about (what the tick thread does every
  ``tick_interval`` when idle).

``python -m benchmarks.tick_cost [--jobs 1000,10000,100000] [--passes 2000]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

from pyscheduler import FakeClock, IntervalSchedule, Job, NoOpLogger, Scheduler, SchedulerConfig

__all__ = ["TickCost", "main", "measure"]

#: far enough that no job comes due while the fake clock moves through the passes.
_AWAY = timedelta(days=30)


@dataclass(frozen=True)
class TickCost:
    """What :func:`measure` found for one number of jobs (times in seconds)."""

    jobs: int
    register_s: float
    start_s: float
    pass_s: list[float]
    poll_pass_s: list[float]


def _noop() -> None:
    """A handler that never runs."""


def measure(jobs: int, passes: int) -> TickCost:
    """Register ``jobs`` jobs, start, and time ``passes`` passes of each kind."""
    clock = FakeClock()
    scheduler = Scheduler(logger=NoOpLogger(), config=SchedulerConfig(), clock=clock)
    first = clock.now() + _AWAY
    started = time.perf_counter()
    for index in range(jobs):
        scheduler.register(Job(f"job-{index}", IntervalSchedule(_AWAY, start_at=first), _noop))
    register_s = time.perf_counter() - started
    started = time.perf_counter()
    scheduler.start(background=False)
    start_s = time.perf_counter() - started
    step = scheduler.config.tick_seconds
    still: list[float] = []
    polled: list[float] = []
    try:
        scheduler.run_pending()  # the first pass polls; the ones timed below start level
        gc.collect()
        gc.disable()  # a collection over 100,000 jobs' objects would land in one pass
        for _ in range(passes):
            started = time.perf_counter()
            scheduler.run_pending()
            still.append(time.perf_counter() - started)
        for _ in range(passes):
            clock.advance(step)
            started = time.perf_counter()
            scheduler.run_pending()
            polled.append(time.perf_counter() - started)
    finally:
        gc.enable()
        scheduler.stop(timeout=5)
    return TickCost(jobs, register_s, start_s, still, polled)


def _us(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:8.1f} / {statistics.fmean(values) * 1e6:8.1f}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tick_cost",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", default="1000,10000,100000",
                        help="comma-separated job counts (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=2000,
                        help="timed passes of each kind per job count (default: %(default)s)")
    args = parser.parse_args(argv)
    sizes = [int(text.replace("_", "")) for text in args.jobs.split(",") if text.strip()]
    print(f"pyscheduler run_pending() with no due work: MemoryBackend, FakeClock, "
          f"{args.passes:,} passes of each kind; µs per pass as median / mean")
    print(f"{'jobs':>9}  {'register s':>10}  {'start s':>8}  {'pass µs':>19}  "
          f"{'pass + poll µs':>19}")
    results = []
    for jobs in sizes:
        cost = measure(jobs, args.passes)
        results.append(cost)
        print(f"{jobs:>9,}  {cost.register_s:>10.3f}  {cost.start_s:>8.3f}  "
              f"{_us(cost.pass_s):>19}  {_us(cost.poll_pass_s):>19}", flush=True)
    if len(results) > 1:
        low, high = results[0], results[-1]
        ratio = statistics.median(high.pass_s) / statistics.median(low.pass_s)
        poll_ratio = statistics.median(high.poll_pass_s) / statistics.median(low.poll_pass_s)
        print(f"{high.jobs:,} vs {low.jobs:,} jobs (median): pass x{ratio:.2f}, "
              f"pass + poll x{poll_ratio:.2f} (flat is about x1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
