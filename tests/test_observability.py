"""Logging and metrics seams: StandardLogger, the no-op bases, and SafeHooks."""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from pythonjsonlogger.json import JsonFormatter

from pyscheduler import (
    FakeClock,
    IntervalSchedule,
    Job,
    MemoryBackend,
    MetricsCollector,
    NoOpLogger,
    NoOpMetrics,
    Scheduler,
    SchedulerConfig,
    StandardLogger,
)
from pyscheduler.observability import RESERVED_FIELD_PREFIX, Logger, SafeHooks

from .helpers import START, WAIT, Recorder, fail_once_then_retry, lose_the_lease_of_a_run, step

LEVELS = ["debug", "info", "warning", "error"]
METRIC_HOOKS = ["job_started", "job_completed", "job_failed", "job_retried", "job_timed_out",
                "job_skipped", "lock_acquired", "lock_contended", "lock_lost"]


def pyscheduler_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "pyscheduler"]


# --- StandardLogger ------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_standard_logger_writes_fields_as_key_value(caplog, level):
    caplog.set_level(logging.DEBUG, logger="pyscheduler")
    getattr(StandardLogger(), level)("job started", {"job": "report", "attempt": 2})
    [record] = pyscheduler_records(caplog)
    assert record.levelname == level.upper()
    assert record.getMessage() == "job started job=report attempt=2"
    assert (record.job, record.attempt) == ("report", 2)  # type: ignore[attr-defined]


def test_standard_logger_without_fields_logs_the_message_alone(caplog):
    caplog.set_level(logging.INFO, logger="pyscheduler")
    StandardLogger().info("scheduler started")
    [record] = pyscheduler_records(caplog)
    assert record.getMessage() == "scheduler started"
    assert record.exc_info is None


def test_standard_logger_message_with_percent_signs_is_not_formatted(caplog):
    caplog.set_level(logging.INFO, logger="pyscheduler")
    StandardLogger().info("100% done", {"pattern": "%s %d"})
    [record] = pyscheduler_records(caplog)
    assert record.getMessage() == "100% done pattern=%s %d"


def test_standard_logger_attaches_an_exc_info_field_as_the_traceback(caplog):
    # Given a failure caught in a handler
    caplog.set_level(logging.INFO, logger="pyscheduler")
    try:
        raise ValueError("disk full")
    except ValueError as exc:
        error = exc

    # When it is logged with an exc_info field
    StandardLogger().error("job failed", {"job": "export", "exc_info": error})

    # Then the traceback travels on the record, not in the text
    [record] = pyscheduler_records(caplog)
    assert record.getMessage() == "job failed job=export"
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "Traceback" in caplog.text and "ValueError: disk full" in caplog.text
    assert not hasattr(record, "pyscheduler_exc_info")


def test_standard_logger_skips_disabled_levels(caplog):
    caplog.set_level(logging.WARNING, logger="pyscheduler")
    logger = StandardLogger()
    logger.debug("noise", {"x": 1})
    logger.info("noise", {"x": 1})
    logger.warning("kept", {"x": 1})
    assert [r.getMessage() for r in pyscheduler_records(caplog)] == ["kept x=1"]


def test_standard_logger_writes_to_a_given_logger(caplog):
    caplog.set_level(logging.INFO, logger="myapp.jobs")
    StandardLogger(logging.getLogger("myapp.jobs")).info("hello", {"n": 1})
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("myapp.jobs", "hello n=1")]


def test_standard_logger_sets_each_field_as_a_record_attribute_clobbering_none(caplog):
    # Given fields named like LogRecord attributes, among ordinary ones
    caplog.set_level(logging.INFO, logger="pyscheduler")
    fields = {"job": "report", "name": "n", "msg": "m", "process": 3, "message": "x",
              "asctime": "t", "args": (1,)}

    # When they are logged
    StandardLogger().info("hello", fields)

    # Then the text is as ever, the ordinary fields are attributes under their own names, and
    # the clashing ones are prefixed, leaving the record's own attributes alone
    [record] = pyscheduler_records(caplog)
    assert record.getMessage() == "hello job=report name=n msg=m process=3 message=x asctime=t " \
                                  "args=(1,)"
    assert record.job == "report"  # type: ignore[attr-defined]
    assert (record.name, record.msg, record.process, record.args) == (
        "pyscheduler", "%s", os.getpid(), ("hello job=report name=n msg=m process=3 "
                                           "message=x asctime=t args=(1,)",))
    assert {key: getattr(record, RESERVED_FIELD_PREFIX + key)
            for key in ("name", "msg", "process", "message", "asctime", "args")} == {
        "name": "n", "msg": "m", "process": 3, "message": "x", "asctime": "t", "args": (1,)}


def test_using_the_library_adds_no_handlers_in_process():
    # Given the handlers of the pyscheduler and root loggers now
    before = (list(logging.getLogger("pyscheduler").handlers),
              list(logging.getLogger().handlers))

    # When every default sink is used
    logger = StandardLogger()
    for level in LEVELS:
        getattr(logger, level)("probe", {"k": "v"})
    SafeHooks(logger, NoOpMetrics()).log("info", "probe")

    # Then no handler was added anywhere
    assert (list(logging.getLogger("pyscheduler").handlers),
            list(logging.getLogger().handlers)) == before


def test_importing_and_running_adds_no_handlers_to_any_logger():
    # Given a fresh interpreter that snapshots every logger's handlers before the import
    script = textwrap.dedent("""
        import json, logging

        def snapshot():
            loggers = [logging.getLogger()] + [
                logger for logger in logging.Logger.manager.loggerDict.values()
                if isinstance(logger, logging.Logger)]
            return {logger.name: len(logger.handlers) for logger in loggers}

        before = snapshot()
        import pyscheduler
        from pyscheduler import FakeClock, IntervalSchedule, Job, Scheduler, SchedulerConfig
        from datetime import datetime, timezone

        def fail():
            raise RuntimeError("boom")

        clock = FakeClock(datetime(2030, 1, 1, tzinfo=timezone.utc))
        scheduler = Scheduler(config=SchedulerConfig(lock_ttl=30), clock=clock)
        scheduler.register(Job("fails", IntervalSchedule(1), fail))
        scheduler.register(Job("works", IntervalSchedule(1), lambda: None))
        scheduler.start(background=False)
        clock.advance(1)
        scheduler.run_pending()
        assert scheduler.wait_idle(10)
        scheduler.stop()
        pyscheduler.StandardLogger().error("done", {"k": 1})
        after = snapshot()
        print(json.dumps({"before": before, "after": after}))
    """)

    # When it imports pyscheduler and runs jobs, one of them failing
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr

    # Then no logger gained a handler
    snapshots = json.loads(result.stdout.strip().splitlines()[-1])
    before, after = snapshots["before"], snapshots["after"]
    assert after.get("pyscheduler", 0) == 0
    assert after["root"] == before["root"] == 0
    assert {name: count for name, count in after.items() if count} == {
        name: count for name, count in before.items() if count}


# --- the no-op bases -----------------------------------------------------------------------


def test_noop_logger_accepts_the_documented_signature():
    logger = NoOpLogger()
    for level in LEVELS:
        method = getattr(logger, level)
        assert method("message") is None
        assert method("message", {"job": "j"}) is None
        assert method("message", fields={"job": "j"}) is None
        assert method(msg="message", fields=None) is None


def test_noop_metrics_accepts_the_documented_signature():
    metrics = NoOpMetrics()
    assert metrics.job_started("j") is None
    assert metrics.job_completed("j", 1.5) is None
    assert metrics.job_completed(name="j", duration=1.5) is None
    assert metrics.job_failed("j", "ValueError: x") is None
    assert metrics.job_failed(name="j", error="ValueError: x") is None
    assert metrics.job_retried("j", 2, 4.0) is None
    assert metrics.job_retried(name="j", attempt=2, delay=4.0) is None
    assert metrics.job_timed_out("j") is None
    assert metrics.job_skipped("j", "misfired") is None
    assert metrics.job_skipped(name="j", reason="misfired") is None
    assert metrics.lock_acquired("j") is None
    assert metrics.lock_contended("j") is None
    assert metrics.lock_lost(name="j") is None


@pytest.mark.parametrize("protocol, implementation, names", [
    (MetricsCollector, NoOpMetrics, METRIC_HOOKS),
    (Logger, NoOpLogger, LEVELS),
    (Logger, StandardLogger, LEVELS),
])
def test_implementations_match_their_protocol_signatures(protocol, implementation, names):
    for name in names:
        assert (inspect.signature(getattr(implementation, name))
                == inspect.signature(getattr(protocol, name))), name
    protocol_methods = {name for name, value in vars(protocol).items()
                        if callable(value) and not name.startswith("_")}
    assert protocol_methods == set(names)


# --- SafeHooks -----------------------------------------------------------------------------


class RecordingLogger(NoOpLogger):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    def info(self, msg, fields=None):
        self.calls.append(("info", msg, fields))


class BrokenLogger(NoOpLogger):
    def __init__(self) -> None:
        self.calls = 0

    def warning(self, msg, fields=None):
        self.calls += 1
        raise RuntimeError("log sink down")


class BrokenMetrics(NoOpMetrics):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def job_completed(self, name, duration):
        self.calls.append(("job_completed", (name, duration)))
        raise ConnectionError("statsd unreachable")

    def job_failed(self, name, error):
        self.calls.append(("job_failed", (name, error)))
        raise KeyError(name)


def test_safe_hooks_passes_fields_and_arguments_through():
    logger = RecordingLogger()
    hooks = SafeHooks(logger, NoOpMetrics())
    hooks.log("info", "job started", job="a", attempt=1)
    assert logger.calls == [("info", "job started", {"job": "a", "attempt": 1})]


def test_safe_hooks_swallows_a_raising_logger_reports_it_once_and_keeps_calling(caplog):
    # Given a logger whose warning() always raises
    caplog.set_level(logging.ERROR, logger="pyscheduler")
    logger = BrokenLogger()
    hooks = SafeHooks(logger, NoOpMetrics())

    # When it is called three times
    for n in range(3):
        hooks.log("warning", "retrying", attempt=n)

    # Then nothing escaped, every call reached it, and one report carries the traceback
    assert logger.calls == 3
    [report] = pyscheduler_records(caplog)
    assert "logger.warning" in report.getMessage()
    assert report.levelno == logging.ERROR
    assert report.exc_info is not None and isinstance(report.exc_info[1], RuntimeError)


def test_safe_hooks_reports_each_broken_metric_once(caplog):
    # Given metrics whose job_completed and job_failed hooks raise
    caplog.set_level(logging.ERROR, logger="pyscheduler")
    metrics = BrokenMetrics()
    hooks = SafeHooks(NoOpLogger(), metrics)

    # When each is called twice, and a working hook in between
    for _ in range(2):
        hooks.metric("job_completed", "a", 0.5)
        hooks.metric("job_started", "a")
        hooks.metric("job_failed", "a", "ValueError: x")

    # Then each was called every time with its arguments, and reported once
    assert metrics.calls == [("job_completed", ("a", 0.5)), ("job_failed", ("a", "ValueError: x"))
                             ] * 2
    messages = [record.getMessage() for record in pyscheduler_records(caplog)]
    assert len(messages) == 2
    assert "metrics.job_completed" in messages[0]
    assert "metrics.job_failed" in messages[1]


def test_a_raising_metrics_hook_never_stops_a_job(caplog, schedulers):
    # Given a scheduler whose every metrics hook raises
    class AllBroken(NoOpMetrics):
        def __getattribute__(self, name):
            if name in METRIC_HOOKS:
                def broken(*args):
                    raise RuntimeError(f"{name} broken")
                return broken
            return super().__getattribute__(name)

    clock = FakeClock(START)
    ran = []
    scheduler = schedulers.stepped(clock, metrics=AllBroken())
    scheduler.register(Job("steady", IntervalSchedule(1), lambda: ran.append(1)))
    scheduler.start(background=False)

    # When two occurrences come
    for _ in range(2):
        clock.advance(1)
        step(scheduler)

    # Then both ran and succeeded
    assert ran == [1, 1]
    meta = scheduler.get_job("steady").metadata
    assert meta.run_count == 2 and meta.last_error == "" and meta.failure_count == 0


def test_safe_hooks_adds_bound_fields_after_the_calls_own():
    # Given hooks with an instance bound
    logger = RecordingLogger()
    hooks = SafeHooks(logger, NoOpMetrics())
    hooks.bind(instance="web-1")

    # When messages are logged, one naming an instance of its own
    hooks.log("info", "job started", job="a")
    hooks.log("info", "forked", instance="parent")

    # Then the bound field comes last, and the call's own wins
    assert logger.calls == [("info", "job started", {"job": "a", "instance": "web-1"}),
                            ("info", "forked", {"instance": "parent"})]


# --- structured logs from a running scheduler ----------------------------------------------


class ListHandler(logging.Handler):
    """A real handler that keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def job_logger():
    """A logger of the test's own, with a :class:`ListHandler` (removed at teardown)."""
    logger = logging.getLogger("tests.structured")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def test_every_record_of_a_run_carries_its_fields_as_attributes(job_logger, schedulers):
    # Given a scheduler logging through a real handler
    logger, handler = job_logger
    clock = FakeClock(START)
    scheduler = schedulers(Scheduler(MemoryBackend(clock), logger=StandardLogger(logger),
                                     config=SchedulerConfig(instance_id="web-1", lock_ttl=30),
                                     clock=clock))

    # When its first occurrence fails and its retry, a second later, succeeds
    fail_once_then_retry(scheduler, clock, "export", retry_after=1)
    scheduler.stop()

    # Then every record names the instance, and each about an attempt names the job, the
    # attempt, the occurrence and the fence as attributes, the text keeping them as key=value
    records = handler.records
    assert records and all(record.instance == "web-1" for record in records)  # type: ignore[attr-defined]
    by_message = {}
    for record in records:
        by_message.setdefault(record.getMessage().split(" job=")[0].split(" retry_in=")[0],
                              []).append(record)
    scheduled = (START + timedelta(seconds=10)).isoformat()
    started = by_message["job started"]
    retried, = by_message["job failed; will retry"]
    succeeded, = by_message["job succeeded"]
    assert [(r.job, r.attempt, r.scheduled_at) for r in started] == [  # type: ignore[attr-defined]
        ("export", 1, scheduled), ("export", 2, scheduled)]
    assert (retried.job, retried.attempt, retried.scheduled_at, retried.error) == (  # type: ignore[attr-defined]
        "export", 1, scheduled, "ValueError: disk full")
    assert retried.exc_info is not None and retried.levelno == logging.WARNING
    assert (succeeded.attempt, succeeded.scheduled_at) == (2, scheduled)  # type: ignore[attr-defined]
    assert started[0].fence == retried.fence  # type: ignore[attr-defined]
    assert started[1].fence == succeeded.fence > retried.fence  # type: ignore[attr-defined]
    text = succeeded.getMessage()
    assert text.startswith("job succeeded job=export attempt=2 seconds=")
    assert text.endswith(f" scheduled_at={scheduled} fence={succeeded.fence} instance=web-1")  # type: ignore[attr-defined]


def test_the_lock_and_the_executor_log_with_the_instance_too(job_logger, schedulers):
    # Given a scheduler whose run loses its lease (the lock's own message)
    logger, handler = job_logger
    clock = FakeClock(START)
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = schedulers(Scheduler(
        MemoryBackend(clock), logger=StandardLogger(logger),
        config=SchedulerConfig(lock_ttl=3, lock_refresh_interval=1), clock=clock))

    # When its deadline passes without a refresh
    lose_the_lease_of_a_run(scheduler, clock, "held", recorder)
    release.set()
    assert scheduler.wait_idle(WAIT)

    # Then the lock's warning names this instance, whose id is made at start
    lost, = [r for r in handler.records if r.getMessage().startswith("lease lost")]
    assert lost.instance == scheduler.instance_id  # type: ignore[attr-defined]
    assert lost.job == "held"  # type: ignore[attr-defined]


def test_python_json_logger_sees_the_fields_as_keys(schedulers):
    # Given the pyscheduler logger writing JSON through python-json-logger
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("tests.json")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        clock = FakeClock(START)
        scheduler = schedulers(Scheduler(
            MemoryBackend(clock), logger=StandardLogger(logger),
            config=SchedulerConfig(instance_id="web-2", lock_ttl=30), clock=clock))
        scheduler.register(Job("report", IntervalSchedule(10), lambda: None))
        scheduler.start(background=False)

        # When an occurrence runs
        clock.advance(10)
        step(scheduler)
    finally:
        logger.removeHandler(handler)

    # Then each line parses, with the fields as top-level keys
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    started, = [line for line in lines if line["message"].startswith("job started")]
    assert {key: started[key] for key in ("levelname", "name", "job", "attempt", "fence",
                                          "instance", "kind")} == {
        "levelname": "INFO", "name": "tests.json", "job": "report", "attempt": 1,
        "fence": started["fence"], "instance": "web-2", "kind": "regular"}
    assert started["scheduled_at"] == (START + timedelta(seconds=10)).isoformat()
    assert isinstance(started["fence"], int) and started["fence"] > 0
    assert {line["instance"] for line in lines} == {"web-2"}


# --- the optional hooks: attempt_started and attempt_ended ---------------------------------


class ProtocolOnlyMetrics:
    """A collector written before the optional hooks: the protocol's methods, nothing else."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def job_started(self, name: str) -> None:
        self.started.append(name)

    def job_completed(self, name: str, duration: float) -> None: ...
    def job_failed(self, name: str, error: str) -> None: ...
    def job_retried(self, name: str, attempt: int, delay: float) -> None: ...
    def job_timed_out(self, name: str) -> None: ...
    def job_skipped(self, name: str, reason: str) -> None: ...
    def lock_acquired(self, name: str) -> None: ...
    def lock_contended(self, name: str) -> None: ...
    def lock_lost(self, name: str) -> None: ...


class AttemptMetrics(NoOpMetrics):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def attempt_started(self, name, attempt, scheduled_at, lag_seconds):
        self.events.append(("started", name, attempt, scheduled_at, lag_seconds))

    def attempt_ended(self, name, attempt, duration):
        self.events.append(("ended", name, attempt, duration))


def test_safe_hooks_skip_the_optional_hooks_a_collector_leaves_out():
    assert not SafeHooks(NoOpLogger(), ProtocolOnlyMetrics()).has_metric("attempt_started")
    assert not SafeHooks(NoOpLogger(), NoOpMetrics()).has_metric("attempt_started")
    assert not SafeHooks(NoOpLogger(), BrokenMetrics()).has_metric("attempt_ended")  # inherited
    hooks = SafeHooks(NoOpLogger(), AttemptMetrics())
    assert hooks.has_metric("attempt_started") and hooks.has_metric("attempt_ended")
    assert hooks.has_metric("job_started")


def test_a_collector_without_the_optional_hooks_keeps_working(caplog, schedulers):
    # Given a scheduler with a collector that has only the protocol's hooks
    caplog.set_level(logging.ERROR, logger="pyscheduler")
    clock = FakeClock(START)
    metrics = ProtocolOnlyMetrics()
    scheduler = schedulers.stepped(clock, metrics=metrics)
    scheduler.register(Job("old", IntervalSchedule(1), lambda: None))
    scheduler.start(background=False)

    # When an attempt runs
    clock.advance(1)
    step(scheduler)

    # Then its hooks were called, and nothing was reported as broken
    assert metrics.started == ["old"]
    assert pyscheduler_records(caplog) == []


def test_attempt_hooks_get_the_start_lag_and_the_duration(schedulers):
    # Given a collector with the optional hooks, and a job that runs for 3 s of the fake clock
    clock = FakeClock(START)
    metrics = AttemptMetrics()
    scheduler = schedulers.stepped(clock, metrics=metrics)
    scheduler.register(Job("late", IntervalSchedule(10), lambda: clock.advance(3)))
    scheduler.start(background=False)

    # When its occurrence, due at +10 s, is claimed 2.5 s late
    clock.advance(12.5)
    step(scheduler)

    # Then the attempt started 2.5 s after its scheduled time, and ended 3 s later
    assert metrics.events == [("started", "late", 1, START + timedelta(seconds=10), 2.5),
                              ("ended", "late", 1, 3.0)]


def test_a_retry_s_lag_counts_from_its_occurrence(schedulers):
    # Given a collector with the optional hooks
    clock = FakeClock(START)
    metrics = AttemptMetrics()
    scheduler = schedulers.stepped(clock, metrics=metrics)

    # When a job's first attempt fails and its retry runs on time, 5 s later
    fail_once_then_retry(scheduler, clock, "flaky", retry_after=5)

    # Then the retry is attempt 2 of the same occurrence, 5 s after it
    started = [event for event in metrics.events if event[0] == "started"]
    assert started == [("started", "flaky", 1, START + timedelta(seconds=10), 0.0),
                       ("started", "flaky", 2, START + timedelta(seconds=10), 5.0)]
    assert [event[:3] for event in metrics.events if event[0] == "ended"] == [
        ("ended", "flaky", 1), ("ended", "flaky", 2)]
