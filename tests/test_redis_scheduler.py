"""A scheduler on a real redis-server that goes away under it."""

from __future__ import annotations

import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyscheduler import IntervalSchedule, Job, JobContext, RedisBackend, Scheduler, SchedulerConfig

from .helpers import WAIT

pytestmark = pytest.mark.redis


def test_stop_completes_when_redis_is_gone(redis_server_factory, caplog, schedulers):
    # Given a scheduler whose job is running, on a Redis that then stops
    server = redis_server_factory()
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1,
                         socket_connect_timeout=1, retry=Retry(NoBackoff(), 1))
    started, release = threading.Event(), schedulers.event()

    def handler(ctx: JobContext) -> None:
        started.set()
        release.wait(WAIT)

    scheduler = schedulers(Scheduler(RedisBackend(client, key_prefix="gone"),
                                     config=SchedulerConfig(tick_interval=0.1, lock_ttl=5,
                                                            lock_refresh_interval=1)))
    scheduler.register(Job("j", IntervalSchedule(0.05), handler))
    scheduler.start()
    assert started.wait(WAIT)
    server.stop()

    # When the run ends and the scheduler stops
    release.set()
    report = scheduler.stop(timeout=WAIT)

    # Then stop() returns normally, saying what it could not record
    assert report.still_running == []
    assert "could not record the last outcomes while stopping" in caplog.text
    client.close()
