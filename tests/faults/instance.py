"""One scheduler instance of the fault suite, in its own OS process.

Like ``tests/procs/worker.py``, but everything the checker needs goes to the history (one
JSON line per event, in this instance's own file):

- ``start`` / ``finish`` of every handler: job, scheduled_ms, attempt, kind, fence, the real
  wall time and the instance's (maybe skewed) clock, the monotonic time, the outcome, the
  cancel reason, and whether the sink accepted the run's fenced writes;
- ``claim`` / ``refresh`` / ``finish_call`` / ``interrupt``: every backend call that took,
  extended or gave up a lease, with the monotonic time it was *sent* (a lease's local deadline
  counts from there) and what the backend answered;
- ``log``: every warning and error the scheduler reported (lease lost, stale completion...);
- ``pause``: the span a ``gil`` handler held the GIL (the process was frozen meanwhile);
- ``ready`` after ``start()``, ``stopped`` after ``stop()`` with the threads left alive.

Monotonic times are ``CLOCK_MONOTONIC``, shared by every process of the host, so the checker
compares them across instances and with the faults the test process injected. Nothing here
decides whether a run was right.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Sequence

import redis

from pyscheduler import (
    Job,
    JobCancelled,
    JobContext,
    NoOpLogger,
    RedisBackend,
    Scheduler,
    SchedulerConfig,
    SystemClock,
)
from pyscheduler.backends.base import ClaimBatch, ClaimRequest, JobState, Lease, Outcome

from .sink import Sink
from .spec import JobSpec, load_specs


class History:
    """Appends events to this instance's history file, one flushed JSON line each."""

    def __init__(self, path: str, instance: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # closed when the process exits
        self._lock = threading.Lock()
        self._instance = instance

    def write(self, event: str, **fields: Any) -> None:
        fields.update(event=event, instance=self._instance, pid=os.getpid(),
                      mono=time.monotonic(), wall=time.time())
        line = json.dumps(fields, default=str) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


class HistoryLogger(NoOpLogger):
    """Keeps every warning and error the scheduler reports."""

    def __init__(self, history: History) -> None:
        self._history = history

    def warning(self, msg: str, fields: Any = None) -> None:
        self._history.write("log", level="warning", msg=msg, fields=_plain(fields))

    def error(self, msg: str, fields: Any = None) -> None:
        self._history.write("log", level="error", msg=msg, fields=_plain(fields))


class SkewedClock(SystemClock):
    """The system clock with its wall time moved by ``skew`` seconds (monotonic untouched)."""

    def __init__(self, skew: float) -> None:
        self._skew = skew
        self._delta = timedelta(seconds=skew)

    def time(self) -> float:  # type: ignore[override]
        return time.time() + self._skew

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self._delta


class RecordingBackend(RedisBackend):
    """A RedisBackend that writes every lease-bearing call to the history."""

    history: History

    def finish_and_claim(
        self, outcomes: Sequence[Outcome], instance_id: str, requests: Sequence[ClaimRequest],
        lease_ms: int, peek: int,
    ) -> tuple[list[Optional[JobState]], ClaimBatch]:
        sent = time.monotonic()
        try:
            states, batch = super().finish_and_claim(outcomes, instance_id, requests, lease_ms,
                                                     peek)
        except Exception as exc:
            self.history.write("claim", sent=sent, error=repr(exc)[:300], claims=[],
                               finished=_leases(o.lease for o in outcomes))
            raise
        if batch.claims or outcomes:
            self.history.write(
                "claim", sent=sent, done=time.monotonic(), server_ms=batch.now_ms,
                claims=[[c.job_name, c.scheduled_ms, c.fence, c.attempt, c.kind,
                         c.claimed_at_ms] for c in batch.claims],
                finished=[[o.lease.job_name, o.lease.fence, state is not None]
                          for o, state in zip(outcomes, states)])
        return states, batch

    def finish(self, outcomes: Sequence[Outcome]) -> list[Optional[JobState]]:
        sent = time.monotonic()
        try:
            states = super().finish(outcomes)
        except Exception as exc:
            self.history.write("finish_call", sent=sent, error=repr(exc)[:300],
                               finished=_leases(o.lease for o in outcomes))
            raise
        self.history.write("finish_call", sent=sent, done=time.monotonic(),
                           finished=[[o.lease.job_name, o.lease.fence, state is not None]
                                     for o, state in zip(outcomes, states)])
        return states

    def refresh(self, leases: Sequence[Lease], lease_ms: int) -> list[bool]:
        sent = time.monotonic()
        try:
            held = super().refresh(leases, lease_ms)
        except Exception as exc:
            self.history.write("refresh", sent=sent, error=repr(exc)[:300],
                               leases=[[lease.job_name, lease.fence, False] for lease in leases])
            raise
        if leases:
            self.history.write("refresh", sent=sent, done=time.monotonic(),
                               leases=[[lease.job_name, lease.fence, ok]
                                       for lease, ok in zip(leases, held)])
        return held

    def interrupt(self, leases: Sequence[Lease]) -> list[bool]:
        released = super().interrupt(leases)
        self.history.write("interrupt", leases=[[lease.job_name, lease.fence, ok]
                                                for lease, ok in zip(leases, released)])
        return released


def make_handler(spec: JobSpec, history: History, sink: Sink, instance: str) -> Any:
    usleep = ctypes.PyDLL(None).usleep  # a PyDLL call keeps the GIL for its whole length

    def handler(ctx: JobContext) -> None:
        scheduled_ms = round(ctx.scheduled_at.timestamp() * 1000)
        run = {"job": ctx.job_name, "scheduled_ms": scheduled_ms, "attempt": ctx.attempt,
                   "kind": ctx.kind, "fence": ctx.fencing_token}
        history.write("start", clock=ctx.clock.time(), **run)
        run["begin"] = sink.write("begin", ctx.job_name, ctx.fencing_token, scheduled_ms,
                                  ctx.attempt, instance)
        behaviour = spec.behaviour if ctx.attempt == 1 or spec.behaviour == "long" else "short"
        try:
            if behaviour == "long":
                if not ctx.sleep(spec.seconds):
                    raise JobCancelled(ctx.cancel_reason)
            elif behaviour == "ignore_cancel_then_fail":
                time.sleep(spec.seconds)
                raise RuntimeError("failed after ignoring its cancellation")
            elif behaviour == "gil":
                held_from = time.monotonic()
                usleep(int(spec.seconds * 1_000_000))
                history.write("pause", start=held_from, end=time.monotonic(), why="gil", **run)
            else:
                time.sleep(spec.seconds)
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, JobCancelled) else "failed"
            history.write("finish", outcome=outcome, reason=ctx.cancel_reason, sink=None,
                          **run)
            raise
        commit = sink.write("commit", ctx.job_name, ctx.fencing_token, scheduled_ms,
                            ctx.attempt, instance)
        history.write("finish", outcome="ok", reason=ctx.cancel_reason, sink=commit, **run)

    return handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True, help="this instance's name in the histories")
    parser.add_argument("--url", required=True, help="Redis (maybe through a proxy)")
    parser.add_argument("--sink-url", required=True)
    parser.add_argument("--prefix", default="faults")
    parser.add_argument("--history", required=True)
    parser.add_argument("--jobs", required=True, help="JSON list of JobSpec")
    parser.add_argument("--lock-ttl", type=float, default=2.0)
    parser.add_argument("--refresh", type=float, default=0.5)
    parser.add_argument("--tick", type=float, default=0.2)
    parser.add_argument("--max-concurrent", type=int, default=10)
    parser.add_argument("--skew", type=float, default=0.0, help="seconds added to wall time")
    parser.add_argument("--misfire-grace", type=float, default=None)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--stop-timeout", type=float, default=2.0)
    parser.add_argument("--socket-timeout", type=float, default=5.0)
    args = parser.parse_args()

    history = History(args.history, args.id)
    clock = SkewedClock(args.skew) if args.skew else SystemClock()
    config = SchedulerConfig(tick_interval=args.tick, max_concurrent=args.max_concurrent,
                             lock_ttl=args.lock_ttl, lock_refresh_interval=args.refresh,
                             misfire_grace_time=args.misfire_grace, instance_id=args.id)
    client = redis.Redis.from_url(args.url, socket_timeout=args.socket_timeout,
                                  socket_connect_timeout=2.0)
    backend = RecordingBackend(client, key_prefix=args.prefix, owns_client=True)
    backend.history = history
    sink = Sink(args.sink_url)
    scheduler = Scheduler(backend, config=config, logger=HistoryLogger(history), clock=clock)
    for spec in load_specs(args.jobs):
        handler = make_handler(spec, history, sink, args.id)
        for name in spec.names():
            scheduler.register(Job(name, spec.schedule(), handler, timeout=spec.timeout,
                                   retry_policy=spec.retry_policy(), recover=spec.recover,
                                   misfire_grace_time=spec.misfire_grace))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler.start()
    history.write("ready", skew=args.skew)
    # In short steps: a process-directed SIGTERM may be delivered to another thread, and
    # then the handler runs only when this thread next runs Python code.
    until = time.monotonic() + args.duration
    while not stop.wait(0.1) and time.monotonic() < until:
        pass
    history.write("stopping")
    report = scheduler.stop(timeout=args.stop_timeout)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and _ours():
        time.sleep(0.02)  # worker threads exit on their own once the pool is shut down
    history.write("stopped", still_running=report.still_running, threads=_ours())


def _ours() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("pyscheduler"))


def _leases(leases: Any) -> list[list[Any]]:
    return [[lease.job_name, lease.fence, None] for lease in leases]


def _plain(fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (fields or {}).items():
        if key in ("exc_info", "traceback"):
            out[key] = str(value)[-400:]
        elif isinstance(value, (str, int, float, bool, type(None))):
            out[key] = value
        else:
            out[key] = str(value)
    return out


if __name__ == "__main__":
    main()
