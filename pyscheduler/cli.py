"""The ``pyscheduler`` command: ``pyscheduler demo`` runs a short in-memory demonstration.

Logging is configured here and only here: a library never configures handlers on import.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
from datetime import timedelta
from typing import Optional, Sequence

__all__ = ["main", "make_parser"]


def make_parser() -> argparse.ArgumentParser:
    """The argument parser, kept apart from :func:`main` so it can be tested and documented."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="pyscheduler", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pyscheduler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a short demo on the in-memory backend")
    demo.add_argument("--duration", type=float, default=15.0,
                      help="seconds to run before a graceful stop (default: 15)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the process exit code."""
    args = make_parser().parse_args(argv)
    if args.command == "demo":
        if not math.isfinite(args.duration) or args.duration <= 0:
            print("pyscheduler demo: --duration must be positive and finite", file=sys.stderr)
            return 2
        return run_demo(args.duration)
    return 2  # pragma: no cover - argparse enforces a command


def run_demo(duration: float) -> int:
    """Run a few jobs of every kind for ``duration`` seconds, printing each start and finish."""
    from . import (
        CronSchedule,
        IntervalSchedule,
        Job,
        JobContext,
        OnceSchedule,
        RetryPolicy,
        RetryStrategy,
        Scheduler,
        SchedulerConfig,
        SystemClock,
    )

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S")
    scheduler = Scheduler(config=SchedulerConfig(tick_interval=1.0, max_concurrent=4,
                                                 lock_ttl=10, lock_refresh_interval=3))
    attempts: dict[str, int] = {}

    def heartbeat(ctx: JobContext) -> None:
        print(f"  heartbeat #{ctx.fencing_token % 1000} scheduled {ctx.scheduled_at:%H:%M:%S}")

    def flaky(ctx: JobContext) -> None:
        attempts[ctx.scheduled_at.isoformat()] = ctx.attempt
        if ctx.attempt < 3:
            raise RuntimeError(f"simulated failure on attempt {ctx.attempt}")
        print(f"  flaky succeeded on attempt {ctx.attempt}")

    def slow(ctx: JobContext) -> None:
        if not ctx.sleep(30):
            print(f"  slow noticed cancellation: {ctx.cancel_reason}")

    now = SystemClock().now()
    scheduler.register(Job("heartbeat", IntervalSchedule(2.0), heartbeat))
    scheduler.register(Job("cron-every-5s", CronSchedule("*/5 * * * * *"),
                           lambda: print("  cron job: on every fifth second")))
    scheduler.register(Job("once", OnceSchedule(now + timedelta(seconds=3)),
                           lambda: print("  one-time job ran")))
    scheduler.register(Job("flaky", OnceSchedule(now + timedelta(seconds=1)), flaky,
                           retry_policy=RetryPolicy(max_retries=3, initial_interval=1.0,
                                                    strategy=RetryStrategy.FIXED)))
    scheduler.register(Job("slow", OnceSchedule(now + timedelta(seconds=2)), slow, timeout=1.5))
    print(f"pyscheduler demo: running for {duration:g} s (Ctrl-C stops early)")
    scheduler.start()
    try:
        threading.Event().wait(duration)
    except KeyboardInterrupt:
        print("interrupted")
    report = scheduler.stop(timeout=5)
    for job in scheduler.jobs():
        meta = job.metadata
        print(f"{job.name:14} {meta.status.value:9} runs={meta.run_count} "
              f"failures={meta.failure_count} last_error={meta.last_error!r}")
    print("stopped cleanly" if report.completed else f"still running: {report.still_running}")
    return 0
