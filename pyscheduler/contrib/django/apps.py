"""The Django app: discovers each installed app's ``jobs.py`` and registers the checks.

``INSTALLED_APPS = [..., "pyscheduler.contrib.django"]`` is all it takes. When Django is set
up, :meth:`PySchedulerConfig.ready` imports every app's ``jobs`` module (as the admin does
with ``admin.py``), registers the system checks, and, with ``AUTOSTART``, starts the
scheduler if this process serves the application (see :mod:`.autostart`).
"""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]

__all__ = ["PySchedulerConfig"]


class PySchedulerConfig(AppConfig):  # type: ignore[misc]
    """pyscheduler's app configuration (label ``pyscheduler``)."""

    name = "pyscheduler.contrib.django"
    label = "pyscheduler"
    verbose_name = "pyscheduler"

    def ready(self) -> None:
        """Find the jobs, register the checks, and start the scheduler if ``AUTOSTART``."""
        from django.core import checks  # type: ignore[import-untyped]
        from django.utils.module_loading import (  # type: ignore[import-untyped]
            autodiscover_modules,
        )

        from . import autostart
        from .checks import check_jobs, check_settings
        from .lazy import scheduler

        checks.register(check_settings, "pyscheduler")
        checks.register(check_jobs, "pyscheduler")
        autodiscover_modules("jobs")
        autostart.start_if_serving(scheduler)
