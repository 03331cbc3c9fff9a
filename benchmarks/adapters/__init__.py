"""One adapter per benchmarked system; :func:`create` imports only the one a worker needs.

Each module imports its own system at the top, so a worker process pays for (and is
measured with) that system alone.
"""

from __future__ import annotations

from .base import POOL_SIZE, Adapter, Fire, Options, SkipRun

__all__ = ["POOL_SIZE", "Adapter", "Fire", "Options", "SkipRun", "create"]


def create(system: str, fire: Fire, options: Options) -> Adapter:
    """Build the adapter of ``system`` (one of :data:`benchmarks.plan.SYSTEMS`).

    :raises SkipRun: the system, or the part of it this run needs, is not available.
    """
    if system in ("pyscheduler-memory", "pyscheduler-redis"):
        from .pyscheduler_adapter import PySchedulerAdapter

        return PySchedulerAdapter(fire, options, redis=system.endswith("-redis"))
    if system in ("apscheduler-memory", "apscheduler-redis"):
        try:
            from .apscheduler_adapter import APSchedulerAdapter
        except ImportError as exc:
            raise SkipRun(f"APScheduler 3.x is not installed ({exc})") from exc
        return APSchedulerAdapter(fire, options, redis=system.endswith("-redis"))
    if system == "schedule":
        try:
            from .schedule_adapter import ScheduleAdapter
        except ImportError as exc:
            raise SkipRun(f"schedule is not installed ({exc})") from exc
        return ScheduleAdapter(fire, options)
    raise ValueError(f"unknown system {system!r}")
