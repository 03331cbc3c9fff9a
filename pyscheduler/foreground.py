"""Running a scheduler as a process's main work: until SIGTERM or SIGINT, then a graceful stop.

The dedicated scheduler processes (``pyscheduler run``, ``flask pyscheduler run``,
``manage.py runscheduler``) all wait the same way: the signal handlers only note the signal,
and the stop runs on the main thread afterwards. A second signal ends the process at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Optional

__all__ = ["StopSignals"]

_log = logging.getLogger("pyscheduler")


class StopSignals:
    """SIGTERM and SIGINT ask for a graceful stop; a second one ends the process at once.

    The handlers only set an event: the stop itself runs on the main thread after the wait,
    never inside a handler, where it could interrupt the scheduler's own bookkeeping.
    """

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._event = threading.Event()
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in self._SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def wait(self) -> None:
        # A bounded wait in a loop: some platforms (Windows) run Python signal handlers only
        # when a blocking wait returns.
        while not self._event.wait(1.0):
            pass

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set():
            # The supervisor or the user will not wait: the leases of unfinished runs expire
            # after lock_ttl, and another instance recovers those runs then.
            _log.warning("second signal (%s): exiting at once, without handing back "
                         "running jobs", name)
            logging.shutdown()
            os._exit(128 + signum)
        self.received = name
        self._event.set()

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.restore()
