"""Which Django process this is, and whether ``AUTOSTART`` starts the scheduler in it.

With ``AUTOSTART`` the scheduler runs in the processes that serve the application: the
workers of a WSGI or ASGI server (gunicorn, uWSGI, any server that loads the project through
``get_wsgi_application()``), and ``runserver``'s serving process. It never runs in other
management commands (``migrate``, ``shell``, ``check``...; ``runscheduler`` starts its own),
nor in the autoreloader's watcher process, which only restarts the server when code changes.
This module decides by looking at how ``django.setup()`` was reached; it imports no server.
"""

from __future__ import annotations

import logging
import os
import sys
from types import FrameType
from typing import TYPE_CHECKING, Iterator, Optional

from ...errors import ConfigError
from ...process import current_server, start_in_workers
from .conf import wants_autostart

if TYPE_CHECKING:
    from .lazy import DjangoScheduler

__all__ = ["serving_process", "start_if_serving"]

_log = logging.getLogger("pyscheduler")

#: set by Django's autoreloader in the child process that serves (django.utils.autoreload)
_AUTORELOAD_ENV = "RUN_MAIN"


def serving_process() -> tuple[bool, str]:
    """Whether this process serves the application, and what it is (for the logs).

    Call it while ``django.setup()`` runs (from ``AppConfig.ready()``): the answer comes
    from the callers on the stack.
    """
    argv = _management_argv()
    if argv is not None:
        command = argv[1] if len(argv) > 1 else "help"
        if command != "runserver":
            return False, f"the management command {command!r}"
        if "--noreload" in argv or os.environ.get(_AUTORELOAD_ENV) == "true":
            return True, "runserver's serving process"
        return False, "runserver's autoreloader (it serves from a child process)"
    server = current_server()
    if server.server is not None:
        return True, f"a {server.server} {server.role} (pid {os.getpid()})"
    if _loading_application():
        return True, f"a process loading the WSGI/ASGI application (pid {os.getpid()})"
    return False, "neither a server nor runserver (a script or a test runner calling " \
                  "django.setup())"


def start_if_serving(scheduler: DjangoScheduler) -> bool:
    """Start ``scheduler`` here if ``AUTOSTART`` is on and this process serves.

    In a pre-forking server's master (``gunicorn --preload``) it starts in each worker after
    the fork instead, and everywhere it stops gracefully (``STOP_TIMEOUT``) at exit.

    :returns: whether it started now.
    :raises ImproperlyConfigured: ``AUTOSTART`` is on and a setting is invalid.
    """
    if not wants_autostart():
        return False
    serving, where = serving_process()
    if not serving:
        _log.debug("pyscheduler: AUTOSTART: not starting the scheduler in %s", where)
        return False
    from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

    try:
        settings = scheduler.settings
    except ConfigError as exc:
        raise ImproperlyConfigured(f"pyscheduler: {exc}") from exc
    _log.info("pyscheduler: AUTOSTART: starting the scheduler in %s", where)
    return start_in_workers(scheduler.scheduler, stop_timeout=settings.stop_timeout)


def _frames() -> Iterator[FrameType]:
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None:
        yield frame
        frame = frame.f_back


def _management_argv() -> Optional[list[str]]:
    # manage.py and django-admin call django.setup() from ManagementUtility.execute(), whose
    # argv names the command; call_command() after setup never reaches ready().
    management = sys.modules.get("django.core.management")
    if management is None:
        return None
    for frame in _frames():
        owner = frame.f_locals.get("self")
        if isinstance(owner, management.ManagementUtility):
            return list(owner.argv)
    return None


def _loading_application() -> bool:
    codes = set()
    for module, function in (("django.core.wsgi", "get_wsgi_application"),
                             ("django.core.asgi", "get_asgi_application")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            codes.add(getattr(loaded, function).__code__)
    return bool(codes) and any(frame.f_code in codes for frame in _frames())
