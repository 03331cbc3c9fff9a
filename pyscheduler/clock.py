"""The single source of time: wall-clock instants, a monotonic clock, and timed waits.

Everything in pyscheduler that reads the time or waits for it goes through a :class:`Clock`,
so tests drive a :class:`FakeClock` instead of sleeping. Wall-clock time decides *which*
occurrence is due; the monotonic clock measures durations, timeouts and lease deadlines,
which must not jump when NTP steps the wall clock.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from time import monotonic as _monotonic
from time import time as _wall_time
from typing import Protocol

from ._time import Duration, to_seconds, to_utc

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """Where the scheduler gets the time from, and how it waits for it."""

    def time(self) -> float:
        """Wall-clock time in epoch seconds."""

    def now(self) -> datetime:
        """Wall-clock time as a tz-aware UTC datetime."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds of this clock passed.

        :returns: whether the event is set.
        """


class SystemClock:
    """The real clock; the default everywhere."""

    # The C functions themselves: these are read several times per run, and a Python
    # wrapper would cost more than the reading.
    time = staticmethod(_wall_time)
    monotonic = staticmethod(_monotonic)

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


class FakeClock:
    """A clock that moves only when told to, for tests.

    Threads waiting on it wake when :meth:`advance` moves time past their deadline, so a test
    can run the scheduler's real threads without sleeping through its schedules.

    :param start: the initial wall-clock time (default 2030-01-01 00:00 UTC).
    """

    #: how often a waiting thread re-checks its event, in real seconds; only bounds how fast
    #: an event set by another thread is noticed, never what is computed.
    poll_interval = 0.005

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2030, 1, 1, tzinfo=timezone.utc)
        # Whole microseconds, so that many small steps add up exactly.
        self._micros = _micros(to_utc(start, "start") - _EPOCH)
        self._monotonic_micros = 1_000_000_000
        self._changed = threading.Condition()

    def time(self) -> float:
        return self._micros / 1_000_000

    def now(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self._micros)

    def monotonic(self) -> float:
        return self._monotonic_micros / 1_000_000

    def advance(self, seconds: Duration) -> None:
        """Move both clocks forward and wake the threads whose wait has run out."""
        step = (_micros(seconds) if isinstance(seconds, timedelta)
                else round(to_seconds(seconds, "seconds") * 1_000_000))
        if step < 0:
            raise ValueError(f"a FakeClock only moves forward, not by {seconds!r}")
        with self._changed:
            self._micros += step
            self._monotonic_micros += step
            self._changed.notify_all()

    def set(self, instant: datetime) -> None:
        """Move to ``instant`` (which must not be in the clock's past)."""
        self.advance(to_utc(instant, "instant") - self.now())

    def wait(self, event: threading.Event, timeout: float) -> bool:
        deadline = self._monotonic_micros + round(max(0.0, timeout) * 1_000_000)
        with self._changed:
            while not event.is_set() and self._monotonic_micros < deadline:
                self._changed.wait(self.poll_interval)
        return event.is_set()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
