"""System checks (``manage.py check``, and before ``runserver`` and ``runscheduler``).

- ``pyscheduler.E001``: ``PYSCHEDULER`` is not a dict.
- ``pyscheduler.E002``: a ``PYSCHEDULER`` key is unknown or its value invalid; the message
  names the setting, e.g. ``PYSCHEDULER['LOCK_TTL']``.
- ``pyscheduler.E003``: a job declared in a ``jobs.py`` cannot be registered (a bad cron
  expression, an unknown option, two jobs of one name).
- ``pyscheduler.W001``: ``AUTOSTART`` with the in-memory backend, where every worker process
  would run every job.
"""

from __future__ import annotations

from typing import Any, Optional

from django.core.checks import CheckMessage, Error, Warning  # type: ignore[import-untyped]

from ...errors import ConfigError, SchedulerError
from .conf import read_settings
from .lazy import scheduler

__all__ = ["check_jobs", "check_settings"]

_REDIS_HINT = ("Share a Redis backend, so that each occurrence runs once across the workers: "
               "PYSCHEDULER = {'BACKEND_TYPE': 'redis', 'REDIS_URL': 'redis://...', ...}. Or "
               "turn AUTOSTART off and run one 'manage.py runscheduler' process. Where only "
               "one process ever serves (runserver), silence this with "
               "SILENCED_SYSTEM_CHECKS = ['pyscheduler.W001'].")


def check_settings(app_configs: Optional[object] = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate ``settings.PYSCHEDULER``, and warn about AUTOSTART without a shared backend."""
    try:
        settings = read_settings()
    except ConfigError as exc:
        if exc.field == "PYSCHEDULER":
            return [Error(str(exc), hint="PYSCHEDULER = {'BACKEND_TYPE': 'redis', "
                          "'REDIS_URL': 'redis://localhost:6379/0', 'AUTOSTART': True}",
                          id="pyscheduler.E001")]
        return [Error(str(exc), hint="See the Configuration section of pyscheduler's README "
                      "for every setting.", id="pyscheduler.E002")]
    if settings.autostart and settings.config.backend_type == "memory":
        return [Warning("PYSCHEDULER['AUTOSTART'] with the in-memory backend: each web "
                        "worker process keeps its own jobs and runs every occurrence itself, "
                        "once per worker.", hint=_REDIS_HINT, id="pyscheduler.W001")]
    return []


def check_jobs(app_configs: Optional[object] = None, **kwargs: Any) -> list[CheckMessage]:
    """Build the scheduler with every declared job, reporting the first one that fails."""
    try:
        read_settings()
    except ConfigError:
        return []  # check_settings reports it
    try:
        scheduler.scheduler  # noqa: B018 - building it registers the jobs
    except SchedulerError as exc:
        return [Error(f"a job declared in a jobs.py cannot be registered: {exc}",
                      id="pyscheduler.E003")]
    return []
