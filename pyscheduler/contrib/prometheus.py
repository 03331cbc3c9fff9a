"""Prometheus exporters: what this process's schedulers did, and what the group's state is.

Two collectors, for two questions:

- :class:`PrometheusMetrics` is a :class:`~pyscheduler.MetricsCollector`: counters of the
  attempts this process started, and how they ended, histograms of their durations and start
  lags, a gauge of those running. Each process counts its own, as Prometheus expects from
  every process it scrapes; in ``prometheus_client``'s multiprocess mode (one ``/metrics``
  for the workers of a gunicorn or uWSGI server) the workers' figures add up.
- :class:`GroupCollector` reads the group's state from the backend at each scrape: per job,
  the last success, the next run, consecutive failures, paused, running; the live instances.
  One exporter anywhere (a sidecar, one web process) is enough to alert on a job that stopped
  succeeding, whichever instance runs it, and nothing is counted twice.

Every metric about a job has a ``job`` label. This module is the ``prometheus`` extra (on
``prometheus_client``): ``import pyscheduler`` never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Optional

try:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("pyscheduler.contrib.prometheus needs prometheus_client: "
                      "pip install 'pyscheduler[prometheus]'") from exc

from ..backends.base import Backend, InstanceInfo, JobState, OccurrenceStatus
from ..observability import NoOpMetrics
from ..outage import OutageLog

__all__ = ["DURATION_BUCKETS", "LAG_BUCKETS", "GroupCollector", "PrometheusMetrics"]

_log = logging.getLogger(__name__)

#: Seconds; jobs run from milliseconds to hours.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                    3600.0, float("inf"))
#: Seconds; a healthy scheduler starts within a tick, an overloaded one falls behind by more.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               float("inf"))


class PrometheusMetrics(NoOpMetrics):
    """A :class:`~pyscheduler.MetricsCollector` that keeps Prometheus metrics, all labelled
    ``job`` (and the skips ``reason``):

    - ``<namespace>_attempts_started_total``, ``..._succeeded_total``, ``..._failed_total``
      (every failed attempt, retried or not, timeouts included), ``..._retried_total``,
      ``..._timed_out_total``;
    - ``<namespace>_occurrences_skipped_total`` (``reason``: ``misfired``, ``abandoned``);
    - ``<namespace>_lock_contended_total`` (another instance claimed the occurrence first)
      and ``<namespace>_lock_lost_total`` (a lease lost while its job ran);
    - ``<namespace>_attempt_duration_seconds``, a histogram of how long handlers ran,
      whatever their outcome;
    - ``<namespace>_start_lag_seconds``, a histogram of how late first attempts started after
      their scheduled time (retries and recoveries start late by design, after their backoff
      or a lease that had to run out, and are left out: this measures the scheduler);
    - ``<namespace>_attempts_running``, a gauge of the handlers running now (a timed-out one
      that ignores its cancellation included: it holds its worker).

    Pass one instance to every scheduler of the process: its metrics are registered once, and
    a second instance on the same registry is refused by ``prometheus_client``.

    :param registry: where the metrics are registered (default: ``prometheus_client``'s
        global ``REGISTRY``, which ``start_http_server`` serves).
    :param namespace: the prefix of every metric name.
    :param duration_buckets: the duration histogram's buckets, in seconds.
    :param lag_buckets: the start lag histogram's buckets, in seconds.
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None,
                 namespace: str = "pyscheduler", *,
                 duration_buckets: Sequence[float] = DURATION_BUCKETS,
                 lag_buckets: Sequence[float] = LAG_BUCKETS) -> None:
        registry = REGISTRY if registry is None else registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ("job", *labels), namespace=namespace,
                           registry=registry)

        self._started = counter("attempts_started", "Attempts whose handler started.")
        self._succeeded = counter("attempts_succeeded", "Attempts that succeeded.")
        self._failed = counter("attempts_failed",
                               "Attempts that failed, retried or not, timeouts included.")
        self._retried = counter("attempts_retried", "Failed attempts that will be retried.")
        self._timed_out = counter("attempts_timed_out",
                                  "Attempts cancelled for outliving their timeout.")
        self._skipped = counter("occurrences_skipped", "Occurrences skipped, by reason.",
                                "reason")
        self._contended = counter("lock_contended",
                                  "Occurrences another instance had claimed first.")
        self._lost = counter("lock_lost", "Leases lost while their job ran.")
        self._duration = Histogram(
            "attempt_duration_seconds", "How long handlers ran, whatever their outcome.",
            ("job",), namespace=namespace, registry=registry, buckets=duration_buckets)
        self._lag = Histogram(
            "start_lag_seconds", "How late first attempts started after their scheduled time.",
            ("job",), namespace=namespace, registry=registry, buckets=lag_buckets)
        # In prometheus_client's multiprocess mode (gunicorn workers), the live workers'
        # gauges add up; the counters and histograms add up by themselves.
        self._running = Gauge("attempts_running", "Handlers running now.", ("job",),
                              namespace=namespace, registry=registry,
                              multiprocess_mode="livesum")

    def job_started(self, name: str) -> None:
        self._started.labels(name).inc()

    def job_completed(self, name: str, duration: float) -> None:
        self._succeeded.labels(name).inc()

    def job_failed(self, name: str, error: str) -> None:
        self._failed.labels(name).inc()

    def job_retried(self, name: str, attempt: int, delay: float) -> None:
        self._retried.labels(name).inc()

    def job_timed_out(self, name: str) -> None:
        self._timed_out.labels(name).inc()

    def job_skipped(self, name: str, reason: str) -> None:
        self._skipped.labels(name, reason).inc()

    def lock_contended(self, name: str) -> None:
        self._contended.labels(name).inc()

    def lock_lost(self, name: str) -> None:
        self._lost.labels(name).inc()

    def attempt_started(self, name: str, attempt: int, scheduled_at: datetime,
                        lag_seconds: float) -> None:
        self._running.labels(name).inc()
        if attempt == 1:
            self._lag.labels(name).observe(lag_seconds)

    def attempt_ended(self, name: str, attempt: int, duration: float) -> None:
        self._running.labels(name).dec()
        self._duration.labels(name).observe(duration)


class GroupCollector(Collector):
    """A ``prometheus_client`` collector of the group's state, read from ``backend`` at each
    scrape (three backend calls, whatever the number of jobs); register it yourself::

        registry.register(GroupCollector(backend))

    Gauges, each job's labelled ``job``:

    - ``<namespace>_job_last_success_timestamp_seconds`` (absent until a first success),
    - ``<namespace>_job_next_run_timestamp_seconds`` (absent while nothing is scheduled: a
      finished one-time job),
    - ``<namespace>_job_consecutive_failures``,
    - ``<namespace>_job_paused`` and ``<namespace>_job_running`` (1 or 0),
    - ``<namespace>_live_instances``: started schedulers whose heartbeat is fresh (absent on a
      backend that keeps no live instances),
    - ``<namespace>_backend_up``: 1 when this scrape read the state, 0 when the backend
      failed. A failed scrape exposes only this, and is logged instead of raised (once, then
      once a minute while the outage lasts: :class:`~pyscheduler.outage.OutageLog`): alert
      on ``<namespace>_backend_up == 0``.

    A scrape waits for the backend as long as its client lets it: give a Redis client a
    ``socket_timeout`` shorter than Prometheus's scrape timeout.

    :param backend: the group's backend; no scheduler is needed in this process.
    :param namespace: the prefix of every metric name.
    """

    def __init__(self, backend: Backend, namespace: str = "pyscheduler") -> None:
        self._backend = backend
        self._namespace = namespace
        self._outage = OutageLog(_log, "pyscheduler group metrics: reading the backend",
                                 meanwhile=f"exposing {namespace}_backend_up 0 until it answers",
                                 traceback=True)

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples: what registering checks names against,
        without a backend call (``REGISTRY`` would otherwise scrape once to learn them)."""
        return list(_Families(self._namespace).all())

    def collect(self) -> Iterator[Metric]:
        """Read the group's state and yield its gauges; never raises for a backend failure."""
        families = _Families(self._namespace)
        try:
            names = self._backend.job_names()
            states = self._backend.get_states(names) if names else []
            instances = self._live_instances()
        except Exception as exc:  # a scrape must answer, whatever the backend raised
            self._outage.failed(exc)
            families.up.add_metric([], 0)
            yield families.up
            return
        self._outage.answered()
        for state in states:
            if state is not None:
                families.add_job(state)
        if instances is not None:
            families.instances.add_metric([], len(instances))
        families.up.add_metric([], 1)
        yield from families.all(with_instances=instances is not None)

    def _live_instances(self) -> Optional[list[InstanceInfo]]:
        try:
            return self._backend.instances()
        except NotImplementedError:  # this backend keeps none: the metric is left out
            return None


class _Families:
    """The gauge families of one scrape."""

    def __init__(self, namespace: str) -> None:
        def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{namespace}_{name}", doc, labels=labels)

        self.last_success = gauge("job_last_success_timestamp_seconds",
                                  "When the job last succeeded (Unix time).", "job")
        self.next_run = gauge("job_next_run_timestamp_seconds",
                              "When the job runs next (Unix time).", "job")
        self.failures = gauge("job_consecutive_failures",
                              "Occurrences that failed in a row, after their retries.", "job")
        self.paused = gauge("job_paused", "1 if the job is paused.", "job")
        self.running = gauge("job_running", "1 if an occurrence of the job is running.", "job")
        self.instances = gauge("live_instances",
                               "Started schedulers of the group with a fresh heartbeat.")
        self.up = gauge("backend_up", "1 if this scrape read the group's state.")

    def add_job(self, state: JobState) -> None:
        job = [state.name]
        if state.last_success_ms is not None:
            self.last_success.add_metric(job, state.last_success_ms / 1000)
        if state.next_run_ms is not None:
            self.next_run.add_metric(job, state.next_run_ms / 1000)
        self.failures.add_metric(job, state.consecutive_failures)
        self.paused.add_metric(job, int(state.paused))
        self.running.add_metric(job, int(state.occurrence_status == OccurrenceStatus.RUNNING))

    def all(self, with_instances: bool = True) -> Iterator[Metric]:
        yield from (self.last_success, self.next_run, self.failures, self.paused, self.running)
        if with_instances:
            yield self.instances
        yield self.up
