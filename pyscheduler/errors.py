"""The exceptions pyscheduler raises, under one root.

Every error the library raises on purpose derives from :class:`SchedulerError`; where callers
would naturally catch a builtin, the error mixes it in::

    SchedulerError
     +-- ConfigError (ValueError)              a SchedulerConfig field is invalid
     +-- InvalidScheduleError (ValueError)     a cron string, interval or run time is invalid
     +-- InvalidJobError (ValueError)          a Job argument is invalid (name, timeout, ...)
     +-- DuplicateJobError                     a Scheduler already has a job of that name
     +-- JobNotFoundError (KeyError)           no job of that name
     +-- SchedulerStateError (RuntimeError)    start() twice, register on a stopped scheduler
     +-- BackendError                          the backend failed or holds bad data
          +-- BackendUnavailableError          ... could not be reached
          +-- CorruptStateError                ... stored data not of our form

A handler's own failures are not errors of ours: they are recorded (``last_error``, the
``job_failed`` metric) and retried per the job's policy; a timeout or a lost lease cancels
the handler's token (:class:`JobCancelled` from ``ctx.raise_if_cancelled()``).
``JobError``, ``JobTimeoutError``, ``LockError`` and ``LeaseLostError`` were never raised:
they are deprecated, and importing one warns.

Control-flow signals are not errors and sit outside the tree: :class:`JobCancelled` (raised by
``JobContext.raise_if_cancelled``) derives from ``BaseException`` so that a handler's broad
``except Exception`` does not swallow it.
"""

from __future__ import annotations

import warnings

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "CorruptStateError",
    "DuplicateJobError",
    "InvalidJobError",
    "InvalidScheduleError",
    "JobCancelled",
    "JobNotFoundError",
    "SchedulerError",
    "SchedulerStateError",
]


class SchedulerError(Exception):
    """Root of every error pyscheduler raises on purpose."""


class ConfigError(SchedulerError, ValueError):
    """A configuration value is invalid; ``field`` names it, ``message`` says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidScheduleError(SchedulerError, ValueError):
    """A schedule could not be built from its input; the message quotes the input."""


class InvalidJobError(SchedulerError, ValueError):
    """A :class:`~pyscheduler.Job` argument is invalid."""


class DuplicateJobError(SchedulerError):
    """The scheduler already has a job registered under this name."""

    def __init__(self, job_name: str) -> None:
        super().__init__(f"a job named {job_name!r} is already registered with this scheduler")
        self.job_name = job_name


class JobNotFoundError(SchedulerError, KeyError):
    """No job of this name is registered."""

    def __init__(self, job_name: str) -> None:
        super().__init__(job_name)
        self.job_name = job_name

    def __str__(self) -> str:
        return f"no job named {self.job_name!r} is registered"


class SchedulerStateError(SchedulerError, RuntimeError):
    """The scheduler is not in a state that allows the call (e.g. ``start()`` twice)."""


class BackendError(SchedulerError):
    """The backend failed, or holds data that is not of our form."""


class BackendUnavailableError(BackendError):
    """The backend could not be reached; the message names its address."""


class CorruptStateError(BackendError):
    """A stored value under our keys is not of our form; the job's state gets reset."""


class JobCancelled(BaseException):
    """Raised inside a handler by ``JobContext.raise_if_cancelled()`` once its token is cancelled.

    It derives from ``BaseException`` so that ``except Exception`` in handler code does not
    swallow the cancellation.
    """


# -- deprecated: never raised ---------------------------------------------------------------


class _JobError(SchedulerError):
    def __init__(self, job_name: str, message: str) -> None:
        super().__init__(f"{job_name}: {message}")
        self.job_name = job_name


class _JobTimeoutError(_JobError, TimeoutError):
    pass


class _LockError(SchedulerError):
    pass


class _LeaseLostError(_LockError):
    pass


_DEPRECATED: dict[str, type[SchedulerError]] = {
    "JobError": _JobError, "JobTimeoutError": _JobTimeoutError, "LockError": _LockError,
    "LeaseLostError": _LeaseLostError}


def deprecated_error(name: str) -> type[SchedulerError]:
    """A deprecated error class, with a warning; raises AttributeError for other names."""
    if name not in _DEPRECATED:
        raise AttributeError(name)
    warnings.warn(f"pyscheduler.{name} is never raised and will be removed in 0.3: catch "
                  "SchedulerError, or JobCancelled inside a handler", DeprecationWarning,
                  stacklevel=3)
    return _DEPRECATED[name]


def __getattr__(name: str) -> type[SchedulerError]:
    try:
        return deprecated_error(name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
