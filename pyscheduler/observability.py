"""Logging and metrics seams: the Go package's Logger and MetricsCollector, in Python form.

Users implement :class:`Logger` and :class:`MetricsCollector` (or subclass the no-op bases and
override what they need). The default logger writes to the standard ``logging`` module under
the ``pyscheduler`` logger and configures no handlers: that is the application's business.
The scheduler calls every hook through :class:`SafeHooks`, so a broken metrics exporter is
logged and never stops a job. The Prometheus exporters are an extra
(:mod:`pyscheduler.contrib.prometheus`), not part of this module.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Mapping, Optional, Protocol

__all__ = [
    "Logger",
    "MetricsCollector",
    "NoOpLogger",
    "NoOpMetrics",
    "OPTIONAL_METRIC_HOOKS",
    "RESERVED_FIELD_PREFIX",
    "SafeHooks",
    "StandardLogger",
    "record_attributes",
]

Fields = Optional[Mapping[str, object]]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

#: The attributes every ``LogRecord`` has (``taskName`` too on Python 3.12+), and the two that
#: formatters add: ``Logger.makeRecord`` refuses an ``extra`` key among them.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime"}
#: What a field named like a ``LogRecord`` attribute becomes on the record: ``name`` is set
#: as ``pyscheduler_name``.
RESERVED_FIELD_PREFIX = "pyscheduler_"

#: The hooks that a collector may leave out: :class:`SafeHooks` calls them only where the
#: collector defines them (a no-op inherited from :class:`NoOpMetrics` counts as left out).
OPTIONAL_METRIC_HOOKS = ("attempt_started", "attempt_ended")


class Logger(Protocol):
    """Structured log sink: a message plus a mapping of fields."""

    def debug(self, msg: str, fields: Fields = None) -> None:
        """Detail useful when diagnosing the scheduler itself."""

    def info(self, msg: str, fields: Fields = None) -> None:
        """Normal events: a job started or finished, the scheduler started or stopped."""

    def warning(self, msg: str, fields: Fields = None) -> None:
        """Something went wrong but was handled: a retry, a timeout, a lost lease."""

    def error(self, msg: str, fields: Fields = None) -> None:
        """A failure: a job failed for good, a backend error, corrupt stored state."""


class MetricsCollector(Protocol):
    """Counters and timings; every method is called with the job's name first.

    Two more hooks are optional, so that collectors written before them keep working: the
    scheduler calls them only on a collector that defines them (see :class:`NoOpMetrics`
    for their signatures, and subclass it to get both as no-ops).

    - ``attempt_started(name, attempt, scheduled_at, lag_seconds)``: right after
      ``job_started``, with the attempt's number, its occurrence's nominal time (tz-aware
      UTC; for a retry or a recovery, the occurrence it repeats) and its *start lag*: how
      late the handler started, counted on the backend's clock from the scheduled time to the
      claim, then on this host's monotonic clock to the handler's start (so clock skew
      between hosts stays out of it). A retry's lag includes its backoff.
    - ``attempt_ended(name, attempt, duration)``: the handler returned or raised, after
      ``duration`` seconds, whatever the outcome (success, failure, timeout, a lost lease),
      once for every ``attempt_started``. A timed-out handler that ignores its cancellation
      ends only when it returns at last: until then it is running, and holds its worker.
    """

    def job_started(self, name: str) -> None:
        """An attempt of the job started."""

    def job_completed(self, name: str, duration: float) -> None:
        """An attempt succeeded after ``duration`` seconds."""

    def job_failed(self, name: str, error: str) -> None:
        """An attempt failed (the error's text, with its type)."""

    def job_retried(self, name: str, attempt: int, delay: float) -> None:
        """A failed attempt will be retried as ``attempt`` after ``delay`` seconds."""

    def job_timed_out(self, name: str) -> None:
        """An attempt outlived its timeout and was cancelled."""

    def job_skipped(self, name: str, reason: str) -> None:
        """An occurrence was skipped (``misfired``, ``abandoned``)."""

    def lock_acquired(self, name: str) -> None:
        """This instance claimed an occurrence of the job."""

    def lock_contended(self, name: str) -> None:
        """Another instance had claimed the occurrence first."""

    def lock_lost(self, name: str) -> None:
        """A lease of this instance expired or was taken over while its job ran."""


class NoOpLogger:
    """A logger that drops everything; subclass it to keep only some levels."""

    def debug(self, msg: str, fields: Fields = None) -> None:
        pass

    def info(self, msg: str, fields: Fields = None) -> None:
        pass

    def warning(self, msg: str, fields: Fields = None) -> None:
        pass

    def error(self, msg: str, fields: Fields = None) -> None:
        pass


class NoOpMetrics:
    """A metrics collector that records nothing; subclass it to count only what you need."""

    def job_started(self, name: str) -> None:
        pass

    def job_completed(self, name: str, duration: float) -> None:
        pass

    def job_failed(self, name: str, error: str) -> None:
        pass

    def job_retried(self, name: str, attempt: int, delay: float) -> None:
        pass

    def job_timed_out(self, name: str) -> None:
        pass

    def job_skipped(self, name: str, reason: str) -> None:
        pass

    def lock_acquired(self, name: str) -> None:
        pass

    def lock_contended(self, name: str) -> None:
        pass

    def lock_lost(self, name: str) -> None:
        pass

    def attempt_started(self, name: str, attempt: int, scheduled_at: datetime,
                        lag_seconds: float) -> None:
        """Optional hook (see :class:`MetricsCollector`): an attempt's handler starts,
        ``lag_seconds`` after its scheduled time."""

    def attempt_ended(self, name: str, attempt: int, duration: float) -> None:
        """Optional hook (see :class:`MetricsCollector`): an attempt's handler returned or
        raised after ``duration`` seconds."""


def record_attributes(fields: Mapping[str, object]) -> dict[str, object]:
    """``fields`` as ``extra`` for a ``LogRecord``: each key as it is, except those that
    name a record attribute (``name``, ``msg``, ``process``...), which get
    :data:`RESERVED_FIELD_PREFIX` so they clobber nothing."""
    return {(RESERVED_FIELD_PREFIX + key if key in _RECORD_ATTRIBUTES else key): value
            for key, value in fields.items()}


class StandardLogger:
    """The default :class:`Logger`: the standard ``logging`` module.

    Fields are appended to the message as ``key=value``, and each is also an attribute of the
    record (passed as ``extra``), so that JSON formatters (python-json-logger, structlog's
    stdlib bridge) see ``job``, ``attempt``, ``scheduled_at``, ``fence``, ``instance`` and the
    rest as keys of their own. A field named like a ``LogRecord`` attribute (``name``,
    ``process``...) is set with the prefix ``pyscheduler_`` (see :func:`record_attributes`).

    :param logger: the ``logging.Logger`` to write to (default: ``pyscheduler``).
    """

    def __init__(self, logger: Optional[logging.Logger] = None) -> None:
        self._logger = logger or logging.getLogger("pyscheduler")

    def enabled(self, level: str) -> bool:
        """Whether the underlying logger writes messages of ``level`` (``"info"``...)."""
        return self._logger.isEnabledFor(_LEVELS[level])

    def _log(self, level: int, msg: str, fields: Fields) -> None:
        if not self._logger.isEnabledFor(level):
            return
        # An "exc_info" field carries a traceback to the handler instead of into the text.
        items = dict(fields or {})
        exc_info = items.pop("exc_info", None)
        text = msg + "".join(f" {key}={value}" for key, value in items.items())
        self._logger.log(level, "%s", text, exc_info=exc_info,  # type: ignore[arg-type]
                         extra=record_attributes(items))

    def debug(self, msg: str, fields: Fields = None) -> None:
        self._log(logging.DEBUG, msg, fields)

    def info(self, msg: str, fields: Fields = None) -> None:
        self._log(logging.INFO, msg, fields)

    def warning(self, msg: str, fields: Fields = None) -> None:
        self._log(logging.WARNING, msg, fields)

    def error(self, msg: str, fields: Fields = None) -> None:
        self._log(logging.ERROR, msg, fields)


class SafeHooks:
    """Calls the user's logger and metrics so that their failures never reach a job.

    A failing hook is reported once per hook name to the ``pyscheduler`` standard logger, the
    one place that cannot itself be user code.
    """

    def __init__(self, logger: Logger, metrics: MetricsCollector) -> None:
        self.logger = logger
        self.metrics = metrics
        self._no_metrics = type(metrics) is NoOpMetrics
        self._optional = frozenset(hook for hook in OPTIONAL_METRIC_HOOKS
                                   if _defines(metrics, hook))
        self._bound: dict[str, object] = {}
        self._reported: set[str] = set()
        self._report_lock = threading.Lock()

    def bind(self, **fields: object) -> None:
        """Add ``fields`` to every message logged from now on, after the call's own fields
        (which win on a clash): the scheduler binds its ``instance`` here at each start."""
        # A new dict, not an update: workers read it without a lock while a start binds.
        self._bound = {**self._bound, **fields}

    def has_metric(self, hook: str) -> bool:
        """Whether calling ``hook`` reaches the collector: an optional one it does not
        define is skipped, so hot paths need not even compute its arguments."""
        return not self._no_metrics and (hook not in OPTIONAL_METRIC_HOOKS
                                         or hook in self._optional)

    def logs(self, level: str) -> bool:
        """Whether a message at ``level`` may be written, so hot paths can skip building it.

        Only the loggers we know are asked: a user's logger always gets every message.
        """
        if type(self.logger) is NoOpLogger:
            return False
        if isinstance(self.logger, StandardLogger):
            return self.logger.enabled(level)
        return True

    def log(self, level: str, msg: str, **fields: object) -> None:
        """Log through the user's logger; ``level`` is debug, info, warning or error."""
        for key, value in self._bound.items():
            fields.setdefault(key, value)
        try:
            getattr(self.logger, level)(msg, fields)
        except BaseException:  # a broken logger must not stop jobs, whatever it raises
            self._report_broken(f"logger.{level}")

    def metric(self, hook: str, *args: object) -> None:
        """Call ``metrics.<hook>(*args)`` (an optional hook only where it is defined)."""
        # has_metric, inlined: this runs several times per occurrence.
        if self._no_metrics or (hook in OPTIONAL_METRIC_HOOKS and hook not in self._optional):
            return
        try:
            getattr(self.metrics, hook)(*args)
        except BaseException:  # a broken metrics hook must not stop jobs, whatever it raises
            self._report_broken(f"metrics.{hook}")

    def _report_broken(self, hook: str) -> None:
        with self._report_lock:
            if hook in self._reported:
                return
            self._reported.add(hook)
        logging.getLogger("pyscheduler").exception("%s raised; pyscheduler carries on", hook)


def _defines(metrics: MetricsCollector, hook: str) -> bool:
    # NoOpMetrics' own no-op does not count: a subclass that leaves it alone costs nothing.
    method = getattr(type(metrics), hook, None)
    if method is None:
        return callable(getattr(metrics, hook, None))  # set on the instance, or __getattr__
    return method is not getattr(NoOpMetrics, hook)
