"""Django integration: ``INSTALLED_APPS += ["pyscheduler.contrib.django"]``.

Jobs are declared in each app's ``jobs.py`` on :data:`scheduler` (found like ``admin.py``),
configured by a ``PYSCHEDULER`` dict in settings.py, and run by ``manage.py runscheduler`` or,
with ``AUTOSTART``, in the web server's worker processes. ``manage.py check`` validates the
settings. ``dashboard_urls(control)`` (from :mod:`.dashboard`) mounts the web dashboard,
staff-only. Needs Django (``pip install pyscheduler[django]``); ``import pyscheduler`` never
imports it.
"""

from __future__ import annotations

try:
    import django  # type: ignore[import-untyped]  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("pyscheduler.contrib.django needs Django: "
                      "pip install pyscheduler[django]") from exc

from typing import Any

from .lazy import DjangoScheduler, scheduler

__all__ = ["DjangoScheduler", "dashboard_urls", "scheduler"]


def __getattr__(name: str) -> Any:
    # The dashboard's views import django.contrib.auth, which needs the app registry ready:
    # imported on first use (from urls.py), not while INSTALLED_APPS loads this package.
    if name == "dashboard_urls":
        from .dashboard import dashboard_urls

        return dashboard_urls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
