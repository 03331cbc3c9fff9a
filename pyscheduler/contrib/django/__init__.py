"""Django integration: ``INSTALLED_APPS += ["pyscheduler.contrib.django"]``.

Jobs are declared in each app's ``jobs.py`` on :data:`scheduler` (found like ``admin.py``),
configured by a ``PYSCHEDULER`` dict in settings.py, and run by ``manage.py runscheduler`` or,
with ``AUTOSTART``, in the web server's worker processes. ``manage.py check`` validates the
settings. Needs Django (``pip install pyscheduler[django]``); ``import pyscheduler`` never
imports it.
"""

from __future__ import annotations

try:
    import django  # type: ignore[import-untyped]  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("pyscheduler.contrib.django needs Django: "
                      "pip install pyscheduler[django]") from exc

from .lazy import DjangoScheduler, scheduler

__all__ = ["DjangoScheduler", "scheduler"]
