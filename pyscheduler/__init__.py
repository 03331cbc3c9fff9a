"""pyscheduler: cron, interval and one-time jobs for Python processes, each occurrence run once
across every process that shares a backend.

Everything public is importable from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backends import Backend, MemoryBackend
from .backends.base import InstanceInfo
from .clock import Clock, FakeClock, SystemClock
from .config import SchedulerConfig
from .context import CancellationToken, JobContext, current_job
from .control import Control, HistoryEntry, JobInfo
from .errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    CorruptStateError,
    DuplicateJobError,
    InvalidJobError,
    InvalidScheduleError,
    JobCancelled,
    JobNotFoundError,
    SchedulerError,
    SchedulerStateError,
    deprecated_error,
)
from .executor import DefaultJobExecutor
from .job import Job, JobMetadata, JobStatus
from .lock import DistributedLock
from .observability import Logger, MetricsCollector, NoOpLogger, NoOpMetrics, StandardLogger
from .process import ServerProcess, current_server, start_in_workers, stop_at_exit
from .retry import RetryPolicy, RetryStrategy
from .scheduler import Scheduler
from .schedules import CronSchedule, IntervalSchedule, OnceSchedule, Schedule
from .shutdown import ShutdownReport

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "CancellationToken",
    "Clock",
    "ConfigError",
    "Control",
    "CorruptStateError",
    "CronSchedule",
    "DefaultJobExecutor",
    "DistributedLock",
    "DuplicateJobError",
    "FakeClock",
    "HistoryEntry",
    "InstanceInfo",
    "IntervalSchedule",
    "InvalidJobError",
    "InvalidScheduleError",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobInfo",
    "JobMetadata",
    "JobNotFoundError",
    "JobStatus",
    "Logger",
    "MemoryBackend",
    "MetricsCollector",
    "NoOpLogger",
    "NoOpMetrics",
    "OnceSchedule",
    "RedisBackend",
    "RetryPolicy",
    "RetryStrategy",
    "Schedule",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerError",
    "SchedulerStateError",
    "ServerProcess",
    "ShutdownReport",
    "StandardLogger",
    "SystemClock",
    "__version__",
    "current_job",
    "current_server",
    "start_in_workers",
    "stop_at_exit",
]


if TYPE_CHECKING:  # typed for users' mypy, imported lazily at run time
    from .backends.redis import RedisBackend


def __getattr__(name: str) -> object:
    # RedisBackend imports redis-py; keep `import pyscheduler` light until it is asked for.
    if name == "RedisBackend":
        from .backends.redis import RedisBackend

        return RedisBackend
    try:
        return deprecated_error(name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
