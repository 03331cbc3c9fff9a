"""A job: a named handler, its schedule, and how to run it (timeout, retries, misfires).

A :class:`Job` is configuration plus a handle on its latest :class:`JobMetadata`. Its runtime
state lives in the backend, shared by every scheduler of the group; ``job.metadata`` is the
snapshot this process saw last (``Scheduler.get_job`` reads a fresh one).
"""

from __future__ import annotations

import enum
import inspect
import operator
import types
import weakref
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Collection, Optional, Union

from ._time import Duration, from_ms, to_seconds
from .backends.base import JobState, OccurrenceStatus, definition_version
from .context import JobContext
from .errors import InvalidJobError
from .retry import RetryPolicy
from .schedules import Schedule

__all__ = ["JOB_OPTIONS", "MAX_NAME_LENGTH", "Handler", "Job", "JobMetadata", "JobStatus",
           "around_handler", "check_job_options", "metadata_from_state"]

#: A handler takes the run's :class:`JobContext`, or nothing. Its return value is ignored.
Handler = Union[Callable[[JobContext], object], Callable[[], object]]

MAX_NAME_LENGTH = 200


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    SCHEDULED = "scheduled"  #: waiting for its next occurrence (or a retry)
    RUNNING = "running"  #: an attempt is running somewhere in the group
    PAUSED = "paused"  #: registered, but not run until resumed
    COMPLETED = "completed"  #: no occurrence left, and the last one succeeded
    FAILED = "failed"  #: no occurrence left, and the last one failed after its retries


@dataclass(frozen=True)
class JobMetadata:
    """A snapshot of a job's shared state.

    ``run_count`` counts finished attempts (retries included); ``failure_count`` and
    ``consecutive_failures`` count occurrences that failed for good, after their retries.
    """

    status: JobStatus = JobStatus.SCHEDULED
    next_run_at: Optional[datetime] = None
    last_run_at: Optional[datetime] = None
    last_success_at: Optional[datetime] = None
    last_error: str = ""
    last_duration: Optional[float] = None
    run_count: int = 0
    failure_count: int = 0
    consecutive_failures: int = 0
    fencing_token: int = 0


class Job:
    """A handler to run on a schedule.

    :param name: unique within the scheduler group: non-empty, printable, at most 200 chars.
    :param schedule: a :class:`~pyscheduler.Schedule` (cron, interval, once, or your own).
    :param handler: ``handler(ctx)`` or ``handler()``; an exception marks the attempt failed.
    :param timeout: seconds (or ``timedelta``) after which the run's token is cancelled and
        the attempt recorded as failed; ``None``: no limit.
    :param retry_policy: how failed attempts are retried; ``None``: not retried.
    :param misfire_grace_time: how late an occurrence may start before it is skipped;
        ``None``: no limit (a late occurrence runs once, however late; missed ones coalesce).
    :param enabled: ``False`` registers the job paused.
    :param recover: re-run an occurrence whose holder died mid-run (at-least-once, the
        default); ``False`` gives up such an occurrence (at-most-once).
    :raises InvalidJobError: an argument is invalid (a ``ValueError``).
    """

    # Slots: a process may hold 100,000 jobs.
    __slots__ = ("_description", "_local_runs", "_state", "_takes_context", "_version",
                 "enabled", "handler", "misfire_grace_time", "name", "recover",
                 "retry_policy", "schedule", "timeout")

    def __init__(
        self,
        name: str,
        schedule: Schedule,
        handler: Handler,
        timeout: Optional[Duration] = None,
        retry_policy: Optional[RetryPolicy] = None,
        misfire_grace_time: Optional[Duration] = None,
        enabled: bool = True,
        recover: bool = True,
    ) -> None:
        self.name = _checked_name(name)
        if not callable(getattr(schedule, "next_after", None)):
            raise InvalidJobError(
                f"job {name!r}: schedule must have next_after(), got {schedule!r}")
        self.schedule = schedule
        self.handler = handler
        self._takes_context = _takes_context(name, handler)
        self.timeout = _positive_or_none(name, "timeout", timeout)
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise InvalidJobError(f"job {name!r}: retry_policy must be a RetryPolicy or None")
        self.retry_policy = retry_policy
        self.misfire_grace_time = _positive_or_none(name, "misfire_grace_time", misfire_grace_time)
        self.enabled = bool(enabled)
        self.recover = bool(recover)
        # The latest stored state this process saw (see _saw); the metadata is derived on
        # demand, so that recording it after every run costs nothing until somebody looks.
        self._state: Optional[tuple[object, ...]] = None
        self._local_runs = 0
        self._description: Optional[dict[str, object]] = None
        self._version: Optional[str] = None

    @property
    def metadata(self) -> JobMetadata:
        """A snapshot of the job's shared state as this process last saw it."""
        state = self._state
        if state is None:
            return JobMetadata(status=JobStatus.SCHEDULED if self.enabled else JobStatus.PAUSED)
        metadata = _metadata(*state)  # type: ignore[arg-type]
        if self._local_runs and metadata.status is JobStatus.SCHEDULED:
            return replace(metadata, status=JobStatus.RUNNING)
        return metadata

    def __repr__(self) -> str:
        return f"Job(name={self.name!r}, schedule={self.schedule!r})"

    def _saw(self, state: JobState) -> None:
        """Remember ``state`` as the latest stored state of this job.

        Kept as a tuple of plain values, not the ``JobState``: a new one arrives after every
        run and lives until the next, and such objects, promoted to the garbage collector's
        oldest generation, make its full collections (tens of milliseconds with 10,000
        jobs, stalling every thread) frequent. A tuple of plain values it stops tracking.
        """
        self._state = _METADATA_FIELDS(state)

    @property
    def max_recoveries(self) -> int:
        """How often an orphaned occurrence of this job may be re-run."""
        if not self.recover:
            return 0
        return max(1, self.retry_policy.max_retries if self.retry_policy else 0)

    def describe(self) -> dict[str, object]:
        """The job as plain data, stored in the backend so operators can list it."""
        return dict(self.stored_description())

    def stored_description(self) -> dict[str, object]:
        """:meth:`describe`, computed once and shared: callers must not mutate it."""
        if self._description is None:  # the fields it shows never change
            self._description = self._describe()
        return self._description

    @property
    def definition_version(self) -> str:
        """The fingerprint of :meth:`describe`: the group runs a job as it was last
        registered, and an instance whose definition differs leaves it to the others."""
        if self._version is None:
            self._version = definition_version(self.stored_description())
        return self._version

    def _describe(self) -> dict[str, object]:
        describe = getattr(self.schedule, "describe", None)
        return {
            "schema": 1,
            "name": self.name,
            "schedule": describe() if callable(describe) else {"type": repr(self.schedule)},
            "timeout": self.timeout,
            "retry_policy": self.retry_policy.to_dict() if self.retry_policy else None,
            "misfire_grace_time": self.misfire_grace_time,
            "recover": self.recover,
        }

    def call_handler(self, ctx: JobContext) -> object:
        """Call the handler the way it wants to be called."""
        if self._takes_context:
            return self.handler(ctx)  # type: ignore[call-arg]
        return self.handler()  # type: ignore[call-arg]


#: Keyword options of :class:`Job` that the decorators (``Scheduler.cron`` and the framework
#: integrations' ``cron``/``every``/``once``) pass on.
JOB_OPTIONS = frozenset({"timeout", "retry_policy", "misfire_grace_time", "enabled", "recover"})


def check_job_options(options: Collection[str]) -> None:
    """Refuse decorator options that :class:`Job` does not take, at the decorator's line.

    :raises InvalidJobError: naming the unknown options and the known ones.
    """
    unknown = sorted(set(options) - JOB_OPTIONS)
    if unknown:
        raise InvalidJobError(f"unknown job option(s) {unknown}; known: {sorted(JOB_OPTIONS)}")


def around_handler(
    name: str, handler: Handler, around: Callable[[Callable[[], object]], object]
) -> Callable[[JobContext], object]:
    """A handler that calls ``handler`` (with the context if it takes one) through ``around``.

    Framework integrations use it to run every handler inside their own scope (an
    application context, database connection hygiene): ``around(call)`` must call
    ``call()`` once and return its result.

    :raises InvalidJobError: ``handler`` takes neither the context nor nothing.
    """
    takes_context = _takes_context(name, handler)

    def wrapped(ctx: JobContext) -> object:
        if takes_context:
            return around(lambda: handler(ctx))  # type: ignore[call-arg]
        return around(handler)  # type: ignore[arg-type]

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    wrapped.__qualname__ = getattr(handler, "__qualname__", wrapped.__name__)
    wrapped.__module__ = getattr(handler, "__module__", __name__)
    wrapped.__wrapped__ = handler  # type: ignore[attr-defined]
    return wrapped


def _checked_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidJobError(f"job name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidJobError(
            f"job name {name[:40]!r}... is {len(name)} characters; at most {MAX_NAME_LENGTH}"
        )
    if not name.isprintable():
        raise InvalidJobError(f"job name {name!r} contains non-printable characters")
    return name


def _positive_or_none(job: str, what: str, value: Optional[Duration]) -> Optional[float]:
    if value is None:
        return None
    try:
        seconds = to_seconds(value, what)
    except (TypeError, ValueError) as exc:
        raise InvalidJobError(f"job {job!r}: {exc}") from None
    if seconds <= 0:
        raise InvalidJobError(f"job {job!r}: {what} must be positive, got {value!r}")
    return seconds


def _takes_context(job: str, handler: object) -> bool:
    if not callable(handler):
        raise InvalidJobError(f"job {job!r}: handler must be callable, got {handler!r}")
    # Inspecting a signature costs more than the rest of a Job: plain functions are read
    # from their code object, and other callables are cached (many jobs share a handler).
    if isinstance(handler, types.FunctionType):
        return _function_arity(job, handler)
    try:
        cached = _ARITY.get(handler)
    except TypeError:  # unhashable callable
        return _inspect_arity(job, handler)
    if cached is None:
        cached = _inspect_arity(job, handler)
        if len(_ARITY) < 4096:
            _ARITY[handler] = cached
    return cached


_ARITY: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()


def _function_arity(job: str, func: types.FunctionType) -> bool:
    code = func.__code__
    positional = code.co_argcount
    required = positional - len(func.__defaults__ or ())
    has_varargs = bool(code.co_flags & inspect.CO_VARARGS)
    kwonly = code.co_varnames[positional:positional + code.co_kwonlyargcount]
    if required > 1 or (kwonly and any(name not in (func.__kwdefaults__ or {})
                                       for name in kwonly)):
        raise InvalidJobError(
            f"job {job!r}: handler {func!r} must take one argument (the JobContext) or none")
    return positional >= 1 or has_varargs


def _inspect_arity(job: str, handler: object) -> bool:
    try:
        signature = inspect.signature(handler)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True  # a builtin without a signature: assume the documented form
    try:
        signature.bind(None)
        return True
    except TypeError:
        pass
    try:
        signature.bind()
        return False
    except TypeError:
        raise InvalidJobError(
            f"job {job!r}: handler {handler!r} must take one argument (the JobContext) or none"
        ) from None


#: The fields of a ``JobState`` that the metadata shows, read in one call (the parameters of
#: :func:`_metadata`, in order).
_METADATA_FIELDS = operator.attrgetter(
    "paused", "occurrence_status", "due_ms", "last_failed", "next_run_ms", "last_run_ms",
    "last_success_ms", "last_error", "last_duration", "run_count", "failure_count",
    "consecutive_failures", "fence")


def metadata_from_state(state: JobState) -> JobMetadata:
    """The user-facing snapshot of a stored job state."""
    return _metadata(*_METADATA_FIELDS(state))


def _metadata(paused: bool, occurrence_status: str, due_ms: Optional[int], last_failed: bool,
              next_run_ms: Optional[int], last_run_ms: Optional[int],
              last_success_ms: Optional[int], last_error: str, last_duration: Optional[float],
              run_count: int, failure_count: int, consecutive_failures: int,
              fence: int) -> JobMetadata:
    if paused:
        status = JobStatus.PAUSED
    elif occurrence_status == OccurrenceStatus.RUNNING:
        status = JobStatus.RUNNING
    elif due_ms is None and not occurrence_status:
        status = JobStatus.FAILED if last_failed else JobStatus.COMPLETED
    else:
        status = JobStatus.SCHEDULED
    return JobMetadata(
        status=status,
        next_run_at=None if next_run_ms is None else from_ms(next_run_ms),
        last_run_at=None if last_run_ms is None else from_ms(last_run_ms),
        last_success_at=None if last_success_ms is None else from_ms(last_success_ms),
        last_error=last_error,
        last_duration=last_duration,
        run_count=run_count,
        failure_count=failure_count,
        consecutive_failures=consecutive_failures,
        fencing_token=fence,
    )
