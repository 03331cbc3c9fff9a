"""What one occurrence of a burst costs pyscheduler, and where.

A burst of N one-time jobs due at one instant, on the in-memory backend (or, with
``--redis``, on a redis-server of its own), the default configuration (10 workers,
``NoOpLogger``, ``NoOpMetrics``), handlers doing nothing, in this process: it reports the
CPU time per occurrence (every thread), the lateness of the last start, and what the claims
carried (backend claim calls and the occurrences each asked for: under the rule that an
instance claims only for its free worker slots, a worker that finishes a run claims for its
own slot). With ``--profile`` (needs ``yappi``) it also counts the Python calls per
occurrence and lists the functions that cost the most, every thread included; profiling
slows everything several times, so its CPU figure is not the plain one.

With ``--redis`` it also reports redis-server's CPU per occurrence over the same window,
and this machine's floor for any Redis client: what a bare ``PING`` round trip costs (wall
time, this process's CPU, the server's CPU). From those it prints two ceilings for one
instance: the occurrences a second its Python work allows with Redis taking no time (the
GIL runs one thread at a time, so a process's Python work cannot exceed one CPU second a
second), and those of the chain when the client and Redis take turns, as one claim call at a
time makes them.

``python -m benchmarks.burst_cost [--jobs 10000] [--workers 10] [--redis] [--profile] [--top 25]``
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Sequence

from pyscheduler import (
    Job,
    JobContext,
    MemoryBackend,
    NoOpLogger,
    NoOpMetrics,
    OnceSchedule,
    Scheduler,
    SchedulerConfig,
)

__all__ = ["BurstCost", "main", "measure"]

#: how far ahead of registration the burst is due: enough to register and start.
_LEAD_SECONDS = 1.5
#: the longest a burst may take before the measurement gives up.
_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class BurstCost:
    jobs: int
    workers: int
    cpu_s: float
    last_start_ms: float
    claim_calls: int
    claimed_requests: int
    #: the part of ``cpu_s`` spent in user mode: Python and the C it calls, under the GIL
    #: (the rest is the kernel's: socket calls and thread wake-ups, without the GIL)
    user_cpu_s: float = 0.0
    #: redis-server's CPU seconds over the same window (``None`` on the memory backend)
    server_cpu_s: Optional[float] = None


@dataclass(frozen=True)
class RoundTrip:
    """Microseconds per bare ``PING``: wall time, this process's CPU, the server's CPU."""

    wall_us: float
    client_cpu_us: float
    server_cpu_us: Optional[float]


class _Counted:
    """Counts the claims a backend answers (alone or with results) and what they asked for."""

    def __init__(self, backend: Any) -> None:
        self.claim_calls = 0
        self.claimed_requests = 0
        claim, finish_and_claim = backend.claim, backend.finish_and_claim

        def counted_claim(instance_id: str, requests: Sequence[Any], lease_ms: int,
                          peek: int) -> Any:
            self._count(requests)
            return claim(instance_id, requests, lease_ms, peek)

        def counted_finish_and_claim(outcomes: Sequence[Any], instance_id: str,
                                     requests: Sequence[Any], lease_ms: int,
                                     peek: int) -> Any:
            if isinstance(backend, MemoryBackend):  # its finish_and_claim calls claim
                return finish_and_claim(outcomes, instance_id, requests, lease_ms, peek)
            self._count(requests)
            return finish_and_claim(outcomes, instance_id, requests, lease_ms, peek)

        backend.claim, backend.finish_and_claim = counted_claim, counted_finish_and_claim

    def _count(self, requests: Sequence[Any]) -> None:
        self.claim_calls += 1
        self.claimed_requests += len(requests)


def measure(jobs: int, workers: int, *, profile: bool = False,
            backend: Optional[Any] = None,
            server_cpu: Callable[[], Optional[float]] = lambda: None) -> BurstCost:
    backend = MemoryBackend() if backend is None else backend
    counted = _Counted(backend)
    scheduler = Scheduler(backend, logger=NoOpLogger(), metrics=NoOpMetrics(),
                          config=SchedulerConfig(max_concurrent=workers))
    starts: list[float] = []
    done = threading.Event()

    def handler(ctx: JobContext) -> None:
        starts.append(time.time())
        if len(starts) >= jobs:
            done.set()

    due = time.time() + _LEAD_SECONDS
    at = datetime.fromtimestamp(due, timezone.utc)
    for index in range(jobs):
        scheduler.register(Job(f"job-{index}", OnceSchedule(at), handler))
    scheduler.start()
    stop_profile = _start_profile() if profile else None
    cpu, user, server_before = time.process_time(), _user_cpu(), server_cpu()
    try:
        if not done.wait(_LEAD_SECONDS + _TIMEOUT_SECONDS):
            raise SystemExit(f"only {len(starts)} of {jobs} runs started")
        cpu, user = time.process_time() - cpu, _user_cpu() - user
        server_after = server_cpu()
    finally:
        if stop_profile is not None:
            stop_profile()
        scheduler.stop(timeout=5)
    server_used = None if server_before is None or server_after is None else \
        server_after - server_before
    return BurstCost(jobs, workers, cpu, (max(starts) - due) * 1000,
                     counted.claim_calls, counted.claimed_requests, user, server_used)


def _user_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def round_trip(server: Any, calls: int = 5_000) -> RoundTrip:
    """What ``calls`` bare PINGs to ``server`` (a :class:`~benchmarks.redis_server.
    RedisServer`) cost each: the transport floor of every backend call on this machine."""
    client = server.client
    client.ping()  # connected before measuring
    wall, cpu, server_before = time.perf_counter(), time.process_time(), server.cpu_seconds()
    for _ in range(calls):
        client.ping()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server_after = server.cpu_seconds()
    server_us = None if server_before is None or server_after is None else \
        (server_after - server_before) / calls * 1e6
    return RoundTrip(wall / calls * 1e6, cpu / calls * 1e6, server_us)


def _start_profile() -> Callable[[], None]:
    try:
        import yappi  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise SystemExit("--profile needs yappi: pip install yappi") from None
    yappi.set_clock_type("cpu")
    yappi.start()
    return yappi.stop  # type: ignore[no-any-return]


def _print_profile(jobs: int, top: int) -> None:
    import yappi  # type: ignore[import-untyped, import-not-found, unused-ignore]

    stats = list(yappi.get_func_stats())
    total = sum(stat.tsub for stat in stats) or 1.0
    print(f"Python calls per occurrence: {sum(stat.ncall for stat in stats) / jobs:.1f}")
    print(f"{'own time':>8}  {'calls/occ':>9}  function")
    for stat in sorted(stats, key=lambda stat: -stat.tsub)[:top]:
        where = f"{stat.module.rsplit('/', 1)[-1]}:{stat.lineno} {stat.name}"
        print(f"{stat.tsub / total:8.1%}  {stat.ncall / jobs:9.2f}  {where}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.burst_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--redis", action="store_true",
                        help="on a redis-server of its own instead of the memory backend")
    parser.add_argument("--profile", action="store_true", help="profile with yappi")
    parser.add_argument("--top", type=int, default=25, help="functions listed (--profile)")
    args = parser.parse_args(argv)
    if args.redis:
        from pyscheduler.backends.redis import RedisBackend

        from .redis_server import RedisServer

        with RedisServer.launch() as server:
            backend = RedisBackend.from_address(f"{server.host}:{server.port}",
                                                key_prefix="burst-cost")
            cost = measure(args.jobs, args.workers, profile=args.profile, backend=backend,
                           server_cpu=server.cpu_seconds)
            backend.close()
            trip = round_trip(server)
    else:
        cost, trip = measure(args.jobs, args.workers, profile=args.profile), None
    calls = max(1, cost.claim_calls)
    print(f"{cost.jobs:,} occurrences on {cost.workers} workers: "
          f"{cost.cpu_s / cost.jobs * 1e6:.1f} us CPU each"
          f"{' (profiled)' if args.profile else ''}, last start "
          f"{cost.last_start_ms:.0f} ms after the due time; {cost.claim_calls:,} claim calls "
          f"asking for {cost.claimed_requests / calls:.2f} occurrences each")
    if trip is not None and not args.profile:
        _print_redis_floor(cost, trip)
    if args.profile:
        _print_profile(cost.jobs, args.top)
    return 0


def _print_redis_floor(cost: BurstCost, trip: RoundTrip) -> None:
    client_us, user_us = cost.cpu_s / cost.jobs * 1e6, cost.user_cpu_s / cost.jobs * 1e6
    server_trip = "?" if trip.server_cpu_us is None else f"{trip.server_cpu_us:.0f}"
    print(f"a bare PING round trip: {trip.wall_us:.0f} us wall, {trip.client_cpu_us:.0f} us "
          f"of this process's CPU, {server_trip} us of redis-server's")
    print(f"ceiling of one instance with Redis taking no time: {1e6 / user_us:,.0f} "
          f"occurrences a second ({user_us:.1f} us of user CPU per occurrence, held under "
          "the GIL: one CPU second a second at most)")
    if cost.server_cpu_s is not None:
        server_us = cost.server_cpu_s / cost.jobs * 1e6
        print(f"redis-server: {server_us:.1f} us CPU per occurrence; the two taking turns "
              f"(one claim call at a time): {1e6 / (client_us + server_us):,.0f} a second")


if __name__ == "__main__":
    raise SystemExit(main())
