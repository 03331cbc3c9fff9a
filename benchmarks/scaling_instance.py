"""One scheduler instance of the scaling benchmark, in its own OS process.

``python -m benchmarks.scaling_instance CONFIG_JSON`` is what :mod:`benchmarks.scaling`
starts, N at once on one redis-server. The exchange with the runner is line based, so that
the slow part (interpreter start and imports, several processes sharing two CPUs) happens
before the first fire instant is chosen:

1. the instance imports, connects and prints ``loaded``;
2. it reads ``t0_ms`` (epoch milliseconds) from stdin, registers the jobs with their first
   fires spread over one interval from ``t0``, starts, and prints ``ready <epoch s>``;
3. at ``t0 + duration`` it stops, writes its history, prints ``done <JSON>`` (its backend
   calls, counted by :func:`count_calls`) and exits.

Every job of every instance is the same: ``job-<i>``, every ``every`` seconds from
``t0 + i * every / jobs`` (whole milliseconds). Handlers do nothing but append
``[job, scheduled_ms, fence, attempt, pid, start]`` to the history, a JSON line each; nothing
here judges a run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, NoReturn, Optional, Sequence

import redis

from pyscheduler import (
    IntervalSchedule,
    Job,
    JobContext,
    NoOpLogger,
    NoOpMetrics,
    Scheduler,
    SchedulerConfig,
)
from pyscheduler.backends.base import Outcome
from pyscheduler.backends.redis import RedisBackend

__all__ = ["count_calls", "first_fire_ms", "main"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: how long stop() waits for running handlers (they return at once).
STOP_TIMEOUT_SECONDS = 2.0


def first_fire_ms(t0_ms: int, index: int, jobs: int, every: float) -> int:
    """Job ``index``'s first fire: ``t0`` plus its share of one interval, in whole ms."""
    return t0_ms + round(index * every * 1000 / jobs)


class History:
    """The handler's record, one JSON line per start, written at the end of the run.

    Lines are kept in memory during the run: a file write per start would add client CPU
    that is the benchmark's, not the scheduler's.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: list[list[Any]] = []

    def handler(self) -> Callable[[JobContext], None]:
        rows, pid = self.rows, os.getpid()

        def handler(ctx: JobContext) -> None:
            started = time.time()
            scheduled_ms = round(ctx.scheduled_at.timestamp() * 1000)
            # list.append is atomic: handlers run on the pool's threads at once.
            rows.append([ctx.job_name, scheduled_ms, ctx.fencing_token, ctx.attempt, pid,
                         started])

        return handler

    def write(self) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.writelines(json.dumps(row) + "\n" for row in self.rows)


def count_calls(backend: RedisBackend) -> Counter[str]:
    """Count this backend's script calls by script, and what the claims and finishes carried.

    Redis's ``INFO commandstats`` only says ``evalsha``. The keys are script names (claim,
    finish, refresh, ...) and ``claim_requests``, ``claim_refused``, ``claim_won``,
    ``outcomes``: the occurrences asked for, refused and won, and the results recorded. This
    wraps methods of the backend (``_evalsha`` is private), so it counts only what is there.
    """
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def add(**amounts: int) -> None:
        with lock:
            counts.update(amounts)

    evalsha = getattr(backend, "_evalsha", None)
    if evalsha is not None:
        def counted_evalsha(name: str, *args: Any, **kwargs: Any) -> Any:
            add(**{name: 1})
            return evalsha(name, *args, **kwargs)

        backend._evalsha = counted_evalsha  # type: ignore[method-assign]

    finish_and_claim, finish = backend.finish_and_claim, backend.finish

    def counted_finish_and_claim(outcomes: Sequence[Outcome], *args: Any, **kwargs: Any) -> Any:
        finished, batch = finish_and_claim(outcomes, *args, **kwargs)
        add(outcomes=len(outcomes), claim_requests=len(args[1] if len(args) > 1 else
                                                           kwargs["requests"]),
            claim_won=len(batch.claims), claim_refused=len(batch.refused))
        return finished, batch

    def counted_finish(outcomes: Sequence[Outcome]) -> Any:
        add(outcomes=len(outcomes))
        return finish(outcomes)

    # claim() goes through finish_and_claim on the instance, so it is counted there.
    backend.finish_and_claim = counted_finish_and_claim  # type: ignore[method-assign]
    backend.finish = counted_finish  # type: ignore[method-assign]
    return counts


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: Optional[list[str]] = None) -> int:
    config: dict[str, Any] = json.loads((sys.argv[1:] if argv is None else argv)[0])
    jobs, every = int(config["jobs"]), float(config["every"])
    history = History(str(config["history"]))
    client = redis.Redis(host=config["host"], port=int(config["port"]))
    client.ping()
    backend = RedisBackend(client, key_prefix=str(config["key_prefix"]))
    calls = count_calls(backend)
    scheduler = Scheduler(backend, logger=NoOpLogger(), metrics=NoOpMetrics(),
                          config=SchedulerConfig(**config["scheduler"]))
    _say("loaded")

    t0_ms = int(sys.stdin.readline())
    handler = history.handler()
    for index in range(jobs):
        first = _EPOCH + timedelta(milliseconds=first_fire_ms(t0_ms, index, jobs, every))
        scheduler.register(Job(f"job-{index}", IntervalSchedule(every, start_at=first),
                               handler))
    scheduler.start()
    _say(f"ready {time.time():.6f}")

    stop_at = t0_ms / 1000 + float(config["duration"])
    while (left := stop_at - time.time()) > 0:
        time.sleep(min(left, 0.5))
    report = scheduler.stop(timeout=STOP_TIMEOUT_SECONDS)
    history.write()
    _say("done " + json.dumps({"calls": dict(calls),
                               "still_running": len(report.still_running)}))
    _exit(0)


def _exit(status: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    # Like benchmarks.worker: every figure is out, so no thread left behind may hang the exit.
    os._exit(status)


if __name__ == "__main__":
    raise SystemExit(main())
