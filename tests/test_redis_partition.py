"""A holder cut off from Redis by a silent partition (issue #9, bug 1), on a real server.

Between the scheduler and Redis sits the fault suite's TCP proxy. When it black-holes the
link, the refresher's call hangs until its socket timeout, then retries; the run must be
cancelled at its local lease deadline anyway, before Redis lets another instance take the
occurrence — not seconds after, when the hanging call gives up.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
import redis

from pyscheduler import Job, JobContext, OnceSchedule, RedisBackend, Scheduler, SchedulerConfig

from .faults.proxy import Proxy
from .helpers import WAIT

pytestmark = pytest.mark.redis

TTL = 3.0


def test_a_partitioned_holder_is_cancelled_before_its_lease_expires_in_redis(redis_server):
    proxy = Proxy(redis_server.port)
    direct = redis.Redis(port=redis_server.port)
    started, cancelled = threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def long_run(ctx: JobContext) -> None:
        started.set()
        ctx.token.event.wait(30)
        seen["cancelled_at"] = time.monotonic()
        # Asked straight from Redis, not through the partition: is the lease still ours?
        seen["lease_ms_left"] = direct.pttl("{part}:lease:long")
        cancelled.set()

    backend = RedisBackend.from_url(f"redis://127.0.0.1:{proxy.port}/0", key_prefix="part")
    scheduler = Scheduler(backend, config=SchedulerConfig(lock_ttl=TTL, lock_refresh_interval=1,
                                                          tick_interval=0.5))
    scheduler.register(Job("long", OnceSchedule(datetime.now(timezone.utc)), long_run))
    try:
        scheduler.start()
        assert started.wait(WAIT)
        # When the link goes silent (every lease refresh since the claim was sent before)
        proxy.hold()
        held_at = time.monotonic()
        # Then the run is cancelled within a TTL of the partition, the lease still in Redis
        assert cancelled.wait(WAIT), "the cut-off run was never cancelled"
        assert seen["cancelled_at"] - held_at < TTL + 0.5
        assert seen["lease_ms_left"] > 0, "cancelled only after Redis let the lease go"
    finally:
        proxy.heal()
        scheduler.stop(timeout=WAIT)
        proxy.close()
        direct.close()
