"""A scheduler instance in its own OS process, for the multi-instance Redis tests.

It registers interval jobs (and optionally one long job), runs until SIGTERM or its duration
ends, and appends every event as a JSON line to ``--history``: starts (job, scheduled_ms,
fence, attempt, kind, pid), finishes, cancellations and stale completions. The tests read the
history afterwards; nothing here decides whether a run was right.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Any

import redis

from pyscheduler import (
    IntervalSchedule,
    Job,
    JobContext,
    NoOpLogger,
    OnceSchedule,
    RedisBackend,
    Scheduler,
    SchedulerConfig,
)


class History:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # closed when the process exits
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        fields.update(event=event, pid=os.getpid(), t=time.time())
        with self._lock:
            self._file.write(json.dumps(fields) + "\n")
            self._file.flush()


class HistoryLogger(NoOpLogger):
    """Keeps the scheduler's own warnings about stale completions and lost leases."""

    def __init__(self, history: History) -> None:
        self._history = history

    def warning(self, msg: str, fields: Any = None) -> None:
        if any(part in msg for part in ("stale completion", "lease lost", "lost lease",
                                        "skipped")):
            self._history.write("log", msg=msg, job=(fields or {}).get("job"))

    def error(self, msg: str, fields: Any = None) -> None:
        self._history.write("error", msg=msg, fields={k: str(v) for k, v in (fields or {}).items()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", default="pyscheduler-test")
    parser.add_argument("--history", required=True)
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--start-at", type=float, default=None, help="epoch seconds")
    parser.add_argument("--handler-ms", type=float, default=1.0)
    parser.add_argument("--long-job", default=None, help="name of a job that runs long")
    parser.add_argument("--long-every", type=float, default=0.0, help="0: a one-time job")
    parser.add_argument("--long-at", type=float, default=None, help="epoch seconds")
    parser.add_argument("--long-seconds", type=float, default=30.0)
    parser.add_argument("--no-recover", action="store_true")
    parser.add_argument("--misfire-grace", type=float, default=None)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--stop-timeout", type=float, default=1.0)
    parser.add_argument("--tick", type=float, default=0.2)
    parser.add_argument("--lock-ttl", type=float, default=2.0)
    parser.add_argument("--refresh", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=10)
    args = parser.parse_args()

    history = History(args.history)
    config = SchedulerConfig(tick_interval=args.tick, max_concurrent=args.workers,
                             lock_ttl=args.lock_ttl, lock_refresh_interval=args.refresh,
                             misfire_grace_time=args.misfire_grace)
    backend = RedisBackend(redis.Redis.from_url(args.url), key_prefix=args.prefix)
    scheduler = Scheduler(backend, config=config, logger=HistoryLogger(history))

    def short(ctx: JobContext) -> None:
        history.write("start", job=ctx.job_name, scheduled_ms=_ms(ctx.scheduled_at),
                      fence=ctx.fencing_token, attempt=ctx.attempt, kind=ctx.kind)
        time.sleep(args.handler_ms / 1000)

    def long(ctx: JobContext) -> None:
        history.write("start", job=ctx.job_name, scheduled_ms=_ms(ctx.scheduled_at),
                      fence=ctx.fencing_token, attempt=ctx.attempt, kind=ctx.kind)
        completed = ctx.sleep(args.long_seconds)
        history.write("end", job=ctx.job_name, scheduled_ms=_ms(ctx.scheduled_at),
                      fence=ctx.fencing_token, completed=completed, reason=ctx.cancel_reason)

    start_at = None if args.start_at is None else datetime.fromtimestamp(args.start_at,
                                                                         timezone.utc)
    for n in range(args.jobs):
        scheduler.register(Job(f"job-{n}", IntervalSchedule(args.every, start_at=start_at),
                               short))
    if args.long_job:
        at = datetime.fromtimestamp(args.long_at or time.time(), timezone.utc)
        schedule = (IntervalSchedule(args.long_every, start_at=at) if args.long_every
                    else OnceSchedule(at))
        scheduler.register(Job(args.long_job, schedule, long, recover=not args.no_recover))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler.start()
    history.write("ready")
    # In short steps: a process-directed SIGTERM may be delivered to another thread, and
    # then the handler runs only when this thread next runs Python code.
    until = time.monotonic() + args.duration
    while not stop.wait(0.1) and time.monotonic() < until:
        pass
    report = scheduler.stop(timeout=args.stop_timeout)
    history.write("stopped", still_running=report.still_running)


def _ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


if __name__ == "__main__":
    main()
