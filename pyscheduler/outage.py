"""OutageLog: a backend that stays down, logged as an outage rather than once per request.

The dashboard and the Prometheus group collector read the backend whenever they are asked
(a page polled every few seconds, a scrape every 15): each failure still gets its answer (a
503 page, ``backend_up 0``), but the log says that the backend failed once, then once per
:data:`OUTAGE_LOG_INTERVAL` while it stays down, and once that it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

__all__ = ["OUTAGE_LOG_INTERVAL", "OutageLog"]

#: While the backend stays down, its failure is logged once per this many seconds.
OUTAGE_LOG_INTERVAL = 60.0


class OutageLog:
    """Logs the failures of ``what`` as outages (see the module).

    :param log: where the messages go.
    :param what: what fails, as the messages start (``"pyscheduler dashboard: the backend"``).
    :param meanwhile: said after the first failure's error: what callers get until it ends.
    :param traceback: log the first failure's traceback (call :meth:`failed` in its handler).
    :param interval: seconds between two messages while the outage lasts.
    :param monotonic: the clock of the interval.
    """

    def __init__(self, log: logging.Logger, what: str, *, meanwhile: str = "",
                 traceback: bool = False, interval: float = OUTAGE_LOG_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._log, self._what, self._meanwhile = log, what, meanwhile
        self._traceback = traceback
        self._interval, self._monotonic = interval, monotonic
        self._lock = threading.Lock()
        self._logged_at: Optional[float] = None  # while down: when it was last logged
        self._failures = 0  # since then

    def failed(self, error: BaseException) -> None:
        now = self._monotonic()
        with self._lock:
            self._failures += 1
            if self._logged_at is not None and now - self._logged_at < self._interval:
                return
            first, self._logged_at = self._logged_at is None, now
            failures, self._failures = self._failures, 0
        if first:
            meanwhile = f"; {self._meanwhile}" if self._meanwhile else ""
            self._log.warning("%s failed: %s%s", self._what, error, meanwhile,
                              exc_info=self._traceback)
        else:
            self._log.warning("%s still fails (%d requests since the last message): %s",
                              self._what, failures, error)

    def answered(self) -> None:
        if self._logged_at is None:  # the common case, without the lock
            return
        with self._lock:
            if self._logged_at is None:
                return
            self._logged_at, self._failures = None, 0
        self._log.info("%s answers again", self._what)
