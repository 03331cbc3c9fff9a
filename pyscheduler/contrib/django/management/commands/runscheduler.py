"""``manage.py runscheduler``: a dedicated scheduler process.

Runs the project's scheduler (every app's ``jobs.py``) in the foreground until SIGTERM or
SIGINT, then stops gracefully: running handlers get ``--stop-timeout`` seconds (default
``PYSCHEDULER['STOP_TIMEOUT']``) before their occurrences are handed back to the group. Logs
go to the console unless the project's ``LOGGING`` already handles the ``pyscheduler`` logger.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Optional

from django.core.management.base import (  # type: ignore[import-untyped]
    BaseCommand,
    CommandError,
    CommandParser,
)

from pyscheduler.contrib.django.lazy import scheduler
from pyscheduler.errors import BackendError, ConfigError, SchedulerStateError
from pyscheduler.foreground import StopSignals

__all__ = ["Command"]

_log = logging.getLogger("pyscheduler")

#: Django's --verbosity (0-3) as the pyscheduler logger's level
_LEVELS = {0: logging.WARNING, 1: logging.INFO}


class Command(BaseCommand):  # type: ignore[misc]
    """Run the scheduler in this process until SIGTERM or SIGINT (Ctrl-C)."""

    help = ("Run the project's scheduler (the jobs of every app's jobs.py) in this process "
            "until SIGTERM or SIGINT, then stop gracefully.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stop-timeout", type=float, default=None, metavar="SECONDS",
            help="how long a graceful stop waits for running handlers before handing their "
                 "occurrences back (default: PYSCHEDULER['STOP_TIMEOUT'], else 25)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Start, wait for a signal, stop."""
        try:
            settings = scheduler.settings
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        timeout = options["stop_timeout"]
        if timeout is None:
            timeout = settings.stop_timeout
        elif timeout < 0:
            raise CommandError("--stop-timeout must not be negative")
        _configure_logging(options["verbosity"])
        with StopSignals() as signals:  # before start(): a SIGTERM then is not lost
            try:
                scheduler.start()
            except (BackendError, SchedulerStateError) as exc:
                raise CommandError(str(exc)) from exc
            names = ", ".join(job.name for job in scheduler.scheduler.jobs()) or "none"
            _log.info("runscheduler: running the jobs %s in process %s; SIGTERM or Ctrl-C "
                      "stops gracefully (a second signal exits at once)", names, os.getpid())
            signals.wait()
            _stop(timeout, signals.received)


def _configure_logging(verbosity: int) -> None:
    logger = logging.getLogger("pyscheduler")
    logger.setLevel(_LEVELS.get(verbosity, logging.DEBUG))
    if logger.hasHandlers():
        return  # the project's LOGGING writes it somewhere already
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


def _stop(timeout: float, received: Optional[str]) -> None:
    _log.info("runscheduler: got %s; stopping, waiting up to %s s for running handlers",
              received or "a signal", timeout)
    report = scheduler.stop(timeout=timeout)
    if report.completed:
        _log.info("runscheduler: stopped gracefully")
    else:
        _log.warning("runscheduler: stopped; still running at the deadline, handed back to "
                     "the group: %s", ", ".join(report.still_running))
