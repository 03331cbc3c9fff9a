"""Scenarios that fork for real, each in a fresh interpreter (tests/test_fork.py runs them).

``built-then-forked``: a scheduler built (not started) here is started in several ``os.fork()``
children, as a module-level scheduler under ``gunicorn --preload`` with a ``post_fork`` start
would be. Every start is appended to ``--history`` as a JSON line; the test checks them.

``started-then-forked``: a scheduler started here, then a fork: the child reports as JSON what
its copy does when used, and the parent checks that it still runs its jobs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

from pyscheduler import (
    IntervalSchedule,
    Job,
    JobContext,
    MemoryBackend,
    RedisBackend,
    Scheduler,
    SchedulerConfig,
    SchedulerStateError,
)


def _append(path: str, **fields: Any) -> None:
    # One write per line with O_APPEND: lines from several processes never interleave.
    with open(path, "a", encoding="utf-8") as history:
        history.write(json.dumps(fields) + "\n")


def _config() -> SchedulerConfig:
    return SchedulerConfig(tick_interval=0.2, lock_ttl=2, lock_refresh_interval=0.5)


def built_then_forked(args: argparse.Namespace) -> None:
    backend = (MemoryBackend() if args.url == "memory"
               else RedisBackend.from_url(args.url, key_prefix="fork"))
    scheduler = Scheduler(backend, config=_config())
    start_at = datetime.fromtimestamp(args.start_at, timezone.utc)

    def record(ctx: JobContext) -> None:
        _append(args.history, pid=os.getpid(), fence=ctx.fencing_token,
                scheduled_ms=round(ctx.scheduled_at.timestamp() * 1000))

    scheduler.register(Job("tick", IntervalSchedule(args.every, start_at=start_at), record))
    open(args.history, "a").close()
    children = []
    for _ in range(args.children):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                scheduler.start()
                _wait_for_run(args.history, args.last_ms)
                scheduler.stop(timeout=2)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    sys.exit(1 if failed else 0)


def _wait_for_run(path: str, scheduled_ms: int) -> None:
    """Until some child ran the occurrence at ``scheduled_ms`` (0: not at all), polled with a
    generous bound."""
    deadline = time.monotonic() + 60
    while scheduled_ms and time.monotonic() < deadline:
        with open(path, encoding="utf-8") as history:
            if any(json.loads(line)["scheduled_ms"] >= scheduled_ms for line in history
                   if line.endswith("}\n")):
                return
        time.sleep(0.05)


def started_then_forked(args: argparse.Namespace) -> None:
    ran = threading.Event()
    scheduler = Scheduler(config=_config())
    scheduler.register(Job("tick", IntervalSchedule(0.05), lambda: ran.set()))
    scheduler.start()
    pid = os.fork()
    if pid == 0:
        report: dict[str, Any] = {"pid": os.getpid()}
        try:
            for call in ("register", "start", "jobs", "get_job", "pause"):
                report[call] = _error_of(scheduler, call)
            report["stop"] = scheduler.stop(timeout=1).still_running
        finally:
            _append(args.history, **report)
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    ran.clear()
    parent_runs = ran.wait(timeout=30)
    scheduler.stop(timeout=2)
    _append(args.history, pid=os.getpid(), parent_still_runs=parent_runs, child_status=status)


def _error_of(scheduler: Scheduler, call: str) -> str:
    try:
        if call == "register":
            scheduler.register(Job("late", IntervalSchedule(60), lambda: None))
        elif call == "get_job":
            scheduler.get_job("tick")
        elif call == "pause":
            scheduler.pause("tick")
        else:
            getattr(scheduler, call)()
    except SchedulerStateError as exc:
        return str(exc)
    return "no error"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["built-then-forked", "started-then-forked"])
    parser.add_argument("--history", required=True)
    parser.add_argument("--url", default="memory")
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds")
    parser.add_argument("--last-ms", type=int, default=0,
                        help="children stop once this occurrence ran (0: at once)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(process)d %(levelname)s %(message)s")
    if args.scenario == "built-then-forked":
        built_then_forked(args)
    else:
        started_then_forked(args)


if __name__ == "__main__":
    main()
