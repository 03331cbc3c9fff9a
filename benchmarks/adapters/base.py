"""What an adapter is: one system behind the small interface every workload drives.

An adapter registers jobs whose handler is ``fire(index)`` (the run's
:class:`~benchmarks.measure.Recorder`), binding the index the way its system does natively,
and starts and stops the system. Each lives in its own worker process, so its imports,
threads and memory are measured alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Optional, Protocol

__all__ = ["POOL_SIZE", "Adapter", "Fire", "Options", "SkipRun", "job_name"]

#: worker threads of every system: handlers running at once.
POOL_SIZE = 10

#: the handler: ``fire(index)``, or ``fire(index, claimed)`` with the epoch seconds of the
#: occurrence the system says it is running, where it says so.
Fire = Callable[..., None]


class SkipRun(Exception):  # noqa: N818 - a signal, not an error
    """This system cannot run here (an optional part is missing); the message says why."""


@dataclass(frozen=True)
class Options:
    """Where the shared backend is, for the ``*-redis`` systems."""

    redis_host: Optional[str] = None
    redis_port: Optional[int] = None
    key_prefix: str = "bench"

    def require_redis(self) -> tuple[str, int]:
        if self.redis_host is None or self.redis_port is None:
            raise SkipRun("no redis-server was started for this run")
        return self.redis_host, self.redis_port


class Adapter(Protocol):
    """One scheduling system, driven by the workloads of :mod:`benchmarks.workloads`."""

    #: the system's version, for the result line.
    version: str
    #: how the system is configured, for the result line.
    settings: dict[str, object]

    def add_interval(self, index: int, every: float, first: datetime) -> None:
        """Register job ``index``: runs at ``first + k * every`` (``first`` is tz-aware UTC)."""

    def add_once(self, index: int, run_at: datetime) -> None:
        """Register job ``index``: runs once at ``run_at``."""

    def start(self) -> None:
        """Start scheduling (and persist the registered jobs, where the system does that)."""

    def stop(self) -> None:
        """Stop promptly: start nothing new, wait at most a couple of seconds."""


def job_name(index: int) -> str:
    """The name (or id) of job ``index`` in every system."""
    return f"job-{index}"
