"""The Prometheus exporters: PrometheusMetrics counts real runs (memory backend, FakeClock),
and GroupCollector reads the group's state from a memory backend and a real redis-server.

Every value is read back from a ``CollectorRegistry`` with ``get_sample_value``, as a scrape
would see it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from typing import Optional

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pyscheduler import (
    FakeClock,
    IntervalSchedule,
    Job,
    JobContext,
    MemoryBackend,
    RedisBackend,
    RetryPolicy,
    Scheduler,
    SchedulerConfig,
)
from pyscheduler.contrib.prometheus import GroupCollector, PrometheusMetrics

from ..helpers import (
    START,
    WAIT,
    Recorder,
    Schedulers,
    fail_once_then_retry,
    lose_the_lease_of_a_run,
    step,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> Optional[float]:
    return registry.get_sample_value(name, labels)


def counted(registry: CollectorRegistry, job: str) -> dict[str, Optional[float]]:
    """Every per-attempt counter of ``job``, by its short name."""
    return {kind: value(registry, f"pyscheduler_attempts_{kind}_total", job=job)
            for kind in ("started", "succeeded", "failed", "retried", "timed_out")}


# --- PrometheusMetrics ---------------------------------------------------------------------


def test_attempt_counters_and_durations_after_real_runs(registry, schedulers):
    # Given a scheduler exporting to a registry, with a job that runs 2 s (of the fake clock)
    clock = FakeClock(START)
    scheduler = schedulers.stepped(clock, metrics=PrometheusMetrics(registry))
    scheduler.register(Job("report", IntervalSchedule(10), lambda: clock.advance(2)))

    # When it runs once, and another job fails once and then succeeds on its retry
    fail_once_then_retry(scheduler, clock, "export", retry_after=1)

    # Then each attempt is counted by its outcome, under its job's label
    assert counted(registry, "report") == {"started": 1, "succeeded": 1, "failed": None,
                                           "retried": None, "timed_out": None}
    assert counted(registry, "export") == {"started": 2, "succeeded": 1, "failed": 1,
                                           "retried": 1, "timed_out": None}
    # And every attempt's duration is observed, failed ones too
    assert value(registry, "pyscheduler_attempt_duration_seconds_count", job="export") == 2
    assert value(registry, "pyscheduler_attempt_duration_seconds_count", job="report") == 1
    assert value(registry, "pyscheduler_attempt_duration_seconds_sum", job="report") == 2.0
    assert value(registry, "pyscheduler_attempt_duration_seconds_bucket", job="report",
                 le="1.0") == 0
    assert value(registry, "pyscheduler_attempt_duration_seconds_bucket", job="report",
                 le="2.5") == 1
    assert value(registry, "pyscheduler_attempts_running", job="report") == 0


def test_start_lag_is_observed_for_first_attempts(registry, schedulers):
    # Given a job due at +100 s, claimed 2.5 s late, whose first attempt fails
    clock = FakeClock(START)
    scheduler = schedulers.stepped(clock, metrics=PrometheusMetrics(registry))
    attempts: list[int] = []

    def late_then_retried(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")

    scheduler.register(Job("late", IntervalSchedule(100), late_then_retried,
                           retry_policy=RetryPolicy(max_retries=1, initial_interval=30,
                                                    jitter=0)))
    scheduler.start(background=False)
    clock.advance(102.5)
    step(scheduler)

    # When its retry runs 30 s later
    clock.advance(30)
    step(scheduler)

    # Then the lag of the first attempt alone is observed: the retry's backoff is no lag
    assert attempts == [1, 2]
    assert value(registry, "pyscheduler_start_lag_seconds_count", job="late") == 1
    assert value(registry, "pyscheduler_start_lag_seconds_sum", job="late") == 2.5
    assert value(registry, "pyscheduler_start_lag_seconds_bucket", job="late", le="1.0") == 0
    assert value(registry, "pyscheduler_start_lag_seconds_bucket", job="late", le="2.5") == 1


def test_the_running_gauge_counts_handlers_running_now(registry, schedulers):
    # Given a job whose handler blocks until released
    clock = FakeClock(START)
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = schedulers.stepped(clock, metrics=PrometheusMetrics(registry))
    scheduler.register(Job("slow", IntervalSchedule(10), recorder))
    scheduler.start(background=False)

    # When it runs, then is released
    clock.advance(10)
    scheduler.run_pending()
    assert recorder.started.wait(WAIT)
    running = value(registry, "pyscheduler_attempts_running", job="slow")
    release.set()
    assert scheduler.wait_idle(WAIT)

    # Then the gauge was 1 while it ran, and is 0 again
    assert running == 1
    assert value(registry, "pyscheduler_attempts_running", job="slow") == 0


def test_timeouts_skips_and_contention_are_counted(registry, schedulers):
    clock = FakeClock(START)
    metrics = PrometheusMetrics(registry)
    backend = MemoryBackend(clock)
    # Given a job that outlives its 1 s timeout (it returns once cancelled) ...
    # (takeover_delay=0: both ask for every occurrence on time, as racing peers)
    first = schedulers.stepped(clock, backend, metrics=metrics, instance_id="first",
                               takeover_delay=0)
    first.register(Job("slow", IntervalSchedule(10), lambda ctx: ctx.sleep(60), timeout=1))
    # ... one that must start within 1 s of its time, and another instance that has both
    first.register(Job("strict", IntervalSchedule(10), lambda: None, misfire_grace_time=1))
    second = schedulers.stepped(clock, backend, metrics=metrics, instance_id="second",
                                takeover_delay=0)
    second.register(Job("slow", IntervalSchedule(10), lambda ctx: ctx.sleep(60), timeout=1))
    first.start(background=False)
    second.start(background=False)

    # When the first instance claims "slow", the second finds it claimed, "strict" is 5 s late
    # and "slow" times out
    clock.advance(15)
    first.run_pending()
    second.run_pending()
    clock.advance(1)
    first.run_pending()
    assert first.wait_idle(WAIT)

    # Then the timeout, the skip and the contention are counted
    assert counted(registry, "slow") == {"started": 1, "succeeded": None, "failed": 1,
                                         "retried": None, "timed_out": 1}
    assert value(registry, "pyscheduler_occurrences_skipped_total", job="strict",
                 reason="misfired") == 1
    assert value(registry, "pyscheduler_lock_contended_total", job="slow") == 1


def test_a_lost_lease_is_counted_and_the_run_stops_counting_as_running(registry, schedulers):
    # Given a run whose lease deadline passes without a refresh
    clock = FakeClock(START)
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = schedulers.stepped(clock, lock_ttl=3, lock_refresh_interval=1,
                                   metrics=PrometheusMetrics(registry))
    lose_the_lease_of_a_run(scheduler, clock, "held", recorder)

    # When its handler returns
    release.set()
    assert scheduler.wait_idle(WAIT)

    # Then the loss is counted, and the attempt is no longer running, though never recorded
    assert value(registry, "pyscheduler_lock_lost_total", job="held") == 1
    assert value(registry, "pyscheduler_attempts_running", job="held") == 0
    assert counted(registry, "held")["succeeded"] is None


def test_a_custom_namespace_prefixes_every_name(registry, schedulers):
    clock = FakeClock(START)
    scheduler = schedulers.stepped(clock, metrics=PrometheusMetrics(registry, namespace="shop"))
    scheduler.register(Job("tick", IntervalSchedule(10), lambda: None))
    scheduler.start(background=False)
    clock.advance(10)
    step(scheduler)
    assert value(registry, "shop_attempts_started_total", job="tick") == 1
    assert value(registry, "pyscheduler_attempts_started_total", job="tick") is None


def test_one_registry_takes_one_prometheus_metrics(registry):
    PrometheusMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusMetrics(registry)


# --- GroupCollector ------------------------------------------------------------------------


def broken() -> None:
    raise ValueError("no disk")


def group_on(registry: CollectorRegistry, backend) -> GroupCollector:
    collector = GroupCollector(backend)
    registry.register(collector)
    return collector


def job_gauges(registry: CollectorRegistry, job: str) -> dict[str, Optional[float]]:
    return {name: value(registry, f"pyscheduler_job_{name}", job=job)
            for name in ("last_success_timestamp_seconds", "next_run_timestamp_seconds",
                         "consecutive_failures", "paused", "running")}


def test_the_group_state_of_a_memory_backend(registry, schedulers):
    # Given a group of two instances: one job succeeded, one failed twice, one is paused and
    # one runs now
    clock = FakeClock(START)
    backend = MemoryBackend(clock)
    release = schedulers.event()
    busy = Recorder(lambda ctx: release.wait(WAIT))
    # (takeover_delay=0: "a" runs its jobs on time whichever instance owns them)
    scheduler = schedulers.stepped(clock, backend, instance_id="a", takeover_delay=0)
    schedulers.stepped(clock, backend, instance_id="b").start(background=False)

    scheduler.register(Job("fine", IntervalSchedule(10), lambda: None))
    scheduler.register(Job("broken", IntervalSchedule(10), broken))
    scheduler.register(Job("held", IntervalSchedule(10), lambda: None))
    scheduler.start(background=False)
    scheduler.pause("held")
    clock.advance(10)
    step(scheduler)
    clock.advance(10)
    step(scheduler)
    scheduler.register(Job("busy", IntervalSchedule(5), busy))
    clock.advance(5)
    scheduler.run_pending()
    assert busy.started.wait(WAIT)

    # When a registry with a GroupCollector on that backend is scraped
    group_on(registry, backend)

    # Then each job's state is exposed under its label, and the live instances counted
    at = START.timestamp()
    assert job_gauges(registry, "fine") == {
        "last_success_timestamp_seconds": at + 20, "next_run_timestamp_seconds": at + 30,
        "consecutive_failures": 0, "paused": 0, "running": 0}
    assert job_gauges(registry, "broken") == {
        "last_success_timestamp_seconds": None, "next_run_timestamp_seconds": at + 30,
        "consecutive_failures": 2, "paused": 0, "running": 0}
    held = job_gauges(registry, "held")
    assert (held["paused"], held["last_success_timestamp_seconds"]) == (1, None)
    assert job_gauges(registry, "busy")["running"] == 1
    assert value(registry, "pyscheduler_live_instances") == 2
    assert value(registry, "pyscheduler_backend_up") == 1
    release.set()


def scraped(registry: CollectorRegistry) -> list[tuple[str, float]]:
    """The samples of a scrape, parsed back from the text format."""
    text = generate_latest(registry).decode()
    return [(sample.name, sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples]


class LosingBackend(MemoryBackend):
    """A memory backend whose reads fail while ``down`` is set, as a backend out of reach."""

    down = False

    def job_names(self) -> list[str]:
        if self.down:
            raise ConnectionError("backend out of reach")
        return super().job_names()


def test_a_scrape_while_the_backend_fails_answers_with_up_0_and_logs_once(registry, caplog):
    # Given a collector on a backend with one job, which then fails
    caplog.set_level(logging.INFO, logger="pyscheduler.contrib.prometheus")
    backend = LosingBackend(FakeClock(START))
    Scheduler(backend).register(Job("j", IntervalSchedule(10), lambda: None))
    group_on(registry, backend)
    backend.down = True

    # When it is scraped twice
    scrapes = [scraped(registry), scraped(registry)]

    # Then each scrape answers, with only backend_up 0, and the outage is logged once
    assert scrapes == [[("pyscheduler_backend_up", 0.0)]] * 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "reading the backend failed" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None

    # And once the backend answers again, so do the job gauges, and the recovery is logged
    backend.down = False
    assert value(registry, "pyscheduler_backend_up") == 1
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_describe_asks_the_backend_nothing(caplog):
    # Given a backend that fails every read
    backend = LosingBackend(FakeClock(START))
    backend.down = True
    # When the collector is registered where registration describes collectors
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GroupCollector(backend))
    # Then that asked the backend nothing (nothing logged) and still knows every name
    assert caplog.records == []
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(GroupCollector(backend))


def started_on_redis(schedulers: Schedulers, url: str, instance_id: str,
                     *jobs: Job) -> Scheduler:
    scheduler = schedulers(Scheduler(
        RedisBackend.from_url(url, key_prefix="metrics"),
        config=SchedulerConfig(instance_id=instance_id, lock_ttl=30, max_concurrent=4)))
    for job in jobs:
        scheduler.register(job)
    scheduler.start()
    return scheduler


@pytest.mark.redis
def test_the_group_state_on_a_real_redis(redis_server, registry, schedulers):
    # Given a group on Redis of two instances, one of which runs a job that succeeds and one
    # that fails, once each, and the other has a job that is paused
    fine, failing = Recorder(), Recorder(lambda ctx: broken())
    one = started_on_redis(schedulers, redis_server.url, "one",
                           Job("fine", IntervalSchedule(3600), fine),
                           Job("broken", IntervalSchedule(3600), failing))
    started_on_redis(schedulers, redis_server.url, "two",
                     Job("held", IntervalSchedule(3600), lambda: None))
    one.pause("held")
    before = time.time()
    one.run_now("fine")
    one.run_now("broken")
    assert fine.started.wait(WAIT) and failing.started.wait(WAIT)
    assert one.wait_idle(WAIT)

    # When a registry with a GroupCollector on its own backend (no scheduler) is scraped
    reader = RedisBackend.from_url(redis_server.url, key_prefix="metrics")
    try:
        group_on(registry, reader)
        fine_job, broken_job, held = (job_gauges(registry, name)
                                      for name in ("fine", "broken", "held"))
        instances = value(registry, "pyscheduler_live_instances")
        up = value(registry, "pyscheduler_backend_up")
    finally:
        reader.close()

    # Then it sees the group's state as the schedulers left it
    after = time.time()
    succeeded_at = fine_job["last_success_timestamp_seconds"]
    assert succeeded_at is not None and before - 1 <= succeeded_at <= after + 1
    next_run_at = fine_job["next_run_timestamp_seconds"]
    assert next_run_at is not None and next_run_at >= before + 3600 - 5
    assert (fine_job["consecutive_failures"], fine_job["paused"], fine_job["running"]) == (
        0, 0, 0)
    assert (broken_job["consecutive_failures"], broken_job["last_success_timestamp_seconds"]
            ) == (1, None)
    assert held["paused"] == 1
    assert (instances, up) == (2, 1)


@pytest.mark.redis
def test_a_scrape_with_redis_down_answers_up_0(redis_server_factory, registry, caplog):
    # Given a collector on a Redis that then stops
    server = redis_server_factory()
    backend = RedisBackend.from_url(server.url, key_prefix="metrics", socket_timeout=2)
    try:
        group_on(registry, backend)
        assert value(registry, "pyscheduler_backend_up") == 1
        server.stop()

        # When it is scraped
        up = value(registry, "pyscheduler_backend_up")
    finally:
        backend.close()

    # Then the scrape answers backend_up 0, and says why in the log
    assert up == 0
    assert value(registry, "pyscheduler_live_instances") is None
    assert "reading the backend failed" in caplog.text


def test_without_prometheus_client_the_import_says_what_to_install():
    # Given an interpreter where prometheus_client cannot be imported
    script = textwrap.dedent("""
        import sys
        sys.modules["prometheus_client"] = None
        try:
            import pyscheduler.contrib.prometheus
        except ImportError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    # Then importing the module fails with the install hint
    assert result.returncode == 0, result.stderr
    assert "pip install 'pyscheduler[prometheus]'" in result.stdout


def test_prometheus_metrics_is_a_metrics_collector_with_both_optional_hooks():
    from pyscheduler.observability import SafeHooks, StandardLogger

    hooks = SafeHooks(StandardLogger(), PrometheusMetrics(CollectorRegistry()))
    assert hooks.has_metric("attempt_started") and hooks.has_metric("attempt_ended")


CHILD = textwrap.dedent("""
    import sys, threading
    from pyscheduler import IntervalSchedule, Job, Scheduler
    from pyscheduler.contrib.prometheus import PrometheusMetrics

    job, runs, block = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "block"
    enough, release = threading.Event(), threading.Event()
    count = [0]

    def handler():
        count[0] += 1
        if count[0] == runs:
            enough.set()
            if block:  # stay running until the test closes stdin
                print("blocked", flush=True)
                release.wait(60)

    scheduler = Scheduler(metrics=PrometheusMetrics())  # the default REGISTRY
    scheduler.register(Job(job, IntervalSchedule(0.01), handler))
    scheduler.start()
    assert enough.wait(60)
    if block:
        sys.stdin.read()
        release.set()
    scheduler.stop(timeout=10)
    print("started", count[0], flush=True)
""")


def test_in_multiprocess_mode_the_workers_figures_add_up(tmp_path):
    from prometheus_client import multiprocess

    # Given two worker processes in prometheus_client's multiprocess mode: one ran "a" and
    # exited, the other ran "b" and is still running its last handler
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", CHILD, "a", "3", "exit"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    ran_a = int(done.stdout.split()[-1])
    blocked = subprocess.Popen([sys.executable, "-c", CHILD, "b", "2", "block"], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert blocked.stdout is not None and blocked.stdout.readline() == "blocked\n"

        # When one registry collects the directory, as a /metrics view would
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))

        # Then the counters hold every worker's attempts, and the running gauge the live
        # worker's handler once (no per-process series)
        assert value(registry, "pyscheduler_attempts_started_total", job="a") == ran_a
        assert value(registry, "pyscheduler_attempts_started_total", job="b") == 2
        assert value(registry, "pyscheduler_attempts_running", job="b") == 1
        running = [sample for family in text_string_to_metric_families(
            generate_latest(registry).decode()) for sample in family.samples
            if sample.name == "pyscheduler_attempts_running"]
        assert all("pid" not in sample.labels for sample in running), running
    finally:
        out, _ = blocked.communicate("", timeout=120)
    assert blocked.returncode == 0 and int(out.split()[-1]) >= 2
