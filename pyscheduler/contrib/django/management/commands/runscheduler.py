"""``manage.py runscheduler``: a dedicated scheduler process.

Runs the project's scheduler (every app's ``jobs.py``) in the foreground until SIGTERM or
SIGINT, then stops gracefully: running handlers get ``--stop-timeout`` seconds (default
``PYSCHEDULER['STOP_TIMEOUT']``) before their occurrences are handed back to the group. Logs
go to the console unless the project's ``LOGGING`` already handles the ``pyscheduler`` logger.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Optional

from django.core.management.base import (  # type: ignore[import-untyped]
    BaseCommand,
    CommandError,
    CommandParser,
)

from pyscheduler.contrib.django.lazy import scheduler
from pyscheduler.errors import BackendError, ConfigError, SchedulerStateError

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
        stop = threading.Event()
        received: list[int] = []
        previous = _on_signals(stop, received)  # before start(): a SIGTERM then is not lost
        try:
            scheduler.start()
        except (BackendError, SchedulerStateError) as exc:
            _restore(previous)
            raise CommandError(str(exc)) from exc
        try:
            names = ", ".join(job.name for job in scheduler.scheduler.jobs()) or "none"
            _log.info("runscheduler: running the jobs %s in process %s; SIGTERM or Ctrl-C "
                      "stops gracefully", names, os.getpid())
            while not stop.wait(1.0):
                pass
        finally:
            # Restored first: a second Ctrl-C interrupts a graceful stop that takes too long.
            _restore(previous)
            _stop(timeout, received)


def _configure_logging(verbosity: int) -> None:
    logger = logging.getLogger("pyscheduler")
    logger.setLevel(_LEVELS.get(verbosity, logging.DEBUG))
    if logger.hasHandlers():
        return  # the project's LOGGING writes it somewhere already
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


def _stop(timeout: float, received: list[int]) -> None:
    if received:
        _log.info("runscheduler: got %s", signal.Signals(received[0]).name)
    _log.info("runscheduler: stopping; waiting up to %s s for running handlers", timeout)
    report = scheduler.stop(timeout=timeout)
    if report.completed:
        _log.info("runscheduler: stopped gracefully")
    else:
        _log.warning("runscheduler: stopped; still running at the deadline, handed back to "
                     "the group: %s", ", ".join(report.still_running))


def _on_signals(stop: threading.Event, received: list[int]) -> dict[int, Any]:
    def handler(signum: int, frame: Optional[FrameType]) -> None:
        # No logging here: the handler may interrupt this thread inside a logging call.
        received.append(signum)
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)

