"""When a job runs: the :class:`Schedule` protocol and its three implementations (cron
expressions live in :mod:`pyscheduler.cron` and are exported here too).

A schedule is a pure function of time: given an instant it names the next occurrence strictly
after it, and nothing more. It keeps no state about runs; deciding which occurrences were
missed, claimed or already run is the scheduler's business (:func:`latest_due` is the one
helper it gets for coalescing a backlog). Instants go in as any ``datetime`` (naive ones are the
machine's local time) and always come out as tz-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping, Optional, Protocol, runtime_checkable

from ._time import Duration, checked_utc, from_ms, to_ms, to_seconds, to_us
from .cron import CronSchedule
from .errors import InvalidScheduleError

__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "OnceSchedule",
    "Schedule",
    "latest_due",
    "latest_due_ms",
    "schedule_from_description",
]

_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)
#: Most iterations a generic :func:`latest_due` walks before it bisects instead.
_MAX_WALK = 100_000


@runtime_checkable
class Schedule(Protocol):
    """The times a job runs at.

    Implementations must be immutable and safe to share between threads.
    """

    def next_after(self, dt: datetime) -> datetime | None:
        """Return the first occurrence strictly after ``dt``.

        :param dt: any datetime; a naive one is taken as the machine's local time.
        :returns: a tz-aware UTC datetime greater than ``dt``, or ``None`` when the schedule has
            no further occurrence. Repeated calls, each passed the previous result, yield a
            strictly increasing sequence; the function is monotonic in ``dt``.
        :raises InvalidScheduleError: ``dt`` is not a datetime.
        """
        ...

    def describe(self) -> dict[str, object]:
        """Return a JSON-serialisable description, e.g. ``{"type": "cron", "expr": ...}``.

        :func:`schedule_from_description` turns it back into an equal schedule.
        """
        ...



#: The longest interval a ``timedelta`` holds, in microseconds.
_MAX_MICROS = (timedelta.max.days * 86_400 + timedelta.max.seconds) * 1_000_000 \
    + timedelta.max.microseconds


@dataclass(frozen=True, init=False)
class IntervalSchedule:
    """Occurrences a fixed interval apart.

    With ``start_at`` the occurrences are ``start_at + k * every`` for every integer ``k``
    (times before ``start_at`` give ``start_at``), so they never drift. Without it
    ``next_after(dt)`` is ``dt + every``: the scheduler anchors the first run one interval
    after registration and then passes each nominal occurrence back in, which does not drift
    either. Arithmetic is in whole microseconds.

    :param every: the interval, as seconds or a ``timedelta``; at least one microsecond.
    :param start_at: the instant the grid is anchored at, or ``None``.
    :raises InvalidScheduleError: ``every`` is not positive, or an argument has the wrong type.
    """

    every: float
    start_at: Optional[datetime]

    def __init__(self, every: Duration, start_at: datetime | None = None) -> None:
        try:
            seconds = to_seconds(every, "every")
        except (TypeError, ValueError) as exc:
            raise InvalidScheduleError(f"invalid interval {every!r}: {exc}") from exc
        micros = round(seconds * 1_000_000)
        if micros <= 0:
            raise InvalidScheduleError(
                f"invalid interval {every!r}: every must be at least one microsecond"
            )
        if micros > _MAX_MICROS:
            raise InvalidScheduleError(f"invalid interval {every!r}: too large for a timedelta")
        # One update rather than a frozen __setattr__ per field: 100,000 jobs are made in a go.
        vars(self).update(every=micros / 1_000_000,
                          start_at=None if start_at is None else checked_utc(start_at, "start_at"),
                          _every_us=micros)

    def describe(self) -> dict[str, object]:
        """``{"type": "interval", "every": seconds, "start_at": ISO 8601 or None}``."""
        start = None if self.start_at is None else self.start_at.isoformat()
        return {"type": "interval", "every": self.every, "start_at": start}

    def next_after(self, dt: datetime) -> datetime | None:
        """The first occurrence strictly after ``dt``; see :class:`Schedule`."""
        after = checked_utc(dt, "dt")
        step: int = self.__dict__["_every_us"]
        try:
            if self.start_at is None:
                return after + timedelta(microseconds=step)
            if after < self.start_at:
                return self.start_at
            elapsed = to_us(after) - to_us(self.start_at)
            return self.start_at + timedelta(microseconds=(elapsed // step + 1) * step)
        except OverflowError:
            return None

    def _latest(self, first: datetime, now: datetime) -> datetime:
        """Latest occurrence in ``[first, now]`` reachable from ``first``, or ``first``."""
        step: int = self.__dict__["_every_us"]
        if self.start_at is None:
            return first + timedelta(microseconds=(to_us(now) - to_us(first)) // step * step)
        if now < self.start_at:
            return first
        elapsed = to_us(now) - to_us(self.start_at)
        latest = self.start_at + timedelta(microseconds=elapsed // step * step)
        return max(latest, first)


@dataclass(frozen=True)
class OnceSchedule:
    """A single occurrence at ``run_at``.

    :param run_at: when to run; stored as a tz-aware UTC datetime.
    :raises InvalidScheduleError: ``run_at`` is not a datetime.
    """

    run_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_at", checked_utc(self.run_at, "run_at"))

    def describe(self) -> dict[str, object]:
        """``{"type": "once", "run_at": ISO 8601}``."""
        return {"type": "once", "run_at": self.run_at.isoformat()}

    def next_after(self, dt: datetime) -> datetime | None:
        """``run_at`` if it is after ``dt``, else ``None``."""
        return self.run_at if self.run_at > checked_utc(dt, "dt") else None


def latest_due(
    schedule: Schedule, first: datetime, now: datetime
) -> tuple[datetime, datetime | None]:
    """Coalesce a backlog of missed occurrences into the one to run.

    :param schedule: the job's schedule.
    :param first: the first missed occurrence.
    :param now: the current time.
    :returns: ``(latest, following)``: the latest occurrence at or before ``now`` that repeated
        ``next_after`` calls reach from ``first`` (``first`` itself when the next one is after
        ``now``), and ``schedule.next_after(latest)``. When ``first`` is after ``now``,
        ``(first, next_after(first))``.

    :class:`IntervalSchedule` takes O(1) arithmetic and :class:`CronSchedule` a search of
    O(log(now - first)) ``next_after`` calls. Any other schedule is walked with ``next_after``
    for up to 100,000 steps; past that the rest is found by the same search, which relies on
    the protocol's promise that ``next_after(dt)`` is the first occurrence after ``dt``.
    """
    start, end = checked_utc(first, "first"), checked_utc(now, "now")
    if start > end:
        latest = start
    elif isinstance(schedule, IntervalSchedule):
        latest = schedule._latest(start, end)
    elif isinstance(schedule, CronSchedule):
        latest = _search_latest(schedule, start, end)
    else:
        latest = _walk_latest(schedule, start, end)
    following = schedule.next_after(latest)
    return latest, None if following is None else checked_utc(following, "next_after()")


def latest_due_ms(schedule: Schedule, first_ms: int, now_ms: int) -> tuple[int, Optional[int]]:
    """:func:`latest_due` in epoch milliseconds: the latest occurrence from ``first_ms`` up to
    ``now_ms``, and the one after it (``None``: no more)."""
    if type(schedule) is OnceSchedule:
        return first_ms, None
    step = _whole_ms_interval(schedule)
    if step:  # the common case, without datetime arithmetic: this runs per occurrence
        latest = first_ms + (now_ms - first_ms) // step * step
        return latest, latest + step
    latest_at, after = latest_due(schedule, from_ms(first_ms), from_ms(now_ms))
    return to_ms(latest_at), None if after is None else to_ms(after)


def _whole_ms_interval(schedule: Schedule) -> int:
    """The interval in ms of an ``IntervalSchedule`` whose grid falls on whole ms, else 0."""
    if type(schedule) is not IntervalSchedule:
        return 0
    micros = round(schedule.every * 1_000_000)
    start = schedule.start_at
    if micros % 1000 or (start is not None and start.microsecond % 1000):
        return 0
    return micros // 1000


def _walk_latest(schedule: Schedule, first: datetime, now: datetime) -> datetime:
    current = first
    for _ in range(_MAX_WALK):
        following = schedule.next_after(current)
        if following is None:
            return current
        following = checked_utc(following, "next_after()")
        if following > now or following <= current:
            return current
        current = following
    return _search_latest(schedule, current, now)


def _search_latest(schedule: Schedule, first: datetime, now: datetime) -> datetime:
    """Latest occurrence in ``(first, now]``, or ``first``, in O(log(now - first)) calls."""

    def due(instant: datetime) -> datetime | None:
        following = schedule.next_after(instant)
        if following is None:
            return None
        following = checked_utc(following, "next_after()")
        return following if following <= now else None

    if due(first) is None:
        return first
    # Invariant: an occurrence follows ``low`` by ``now``, none follows ``high`` by ``now``.
    low, high = first, now
    reach = _ONE_SECOND
    while now - reach > low:
        if due(now - reach) is not None:
            low = now - reach
            break
        high = now - reach
        reach *= 2
    while high - low > _ONE_MICROSECOND:
        middle = low + (high - low) // 2
        if due(middle) is not None:
            low = middle
        else:
            high = middle
    latest = due(low)
    return latest if latest is not None else first


_KEYS: dict[str, tuple[set[str], set[str]]] = {
    # type: (required keys, optional keys)
    "cron": ({"type", "expr"}, {"tz"}),
    "interval": ({"type", "every"}, {"start_at"}),
    "once": ({"type", "run_at"}, set()),
}


def _parse_instant(value: object, key: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidScheduleError(
            f"schedule description: {key} must be an ISO 8601 string, not {value!r}"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidScheduleError(
            f"schedule description: {key} {value!r} is not ISO 8601"
        ) from exc
    if parsed.utcoffset() is None:
        raise InvalidScheduleError(f"schedule description: {key} {value!r} has no UTC offset")
    return parsed


def schedule_from_description(d: Mapping[str, object]) -> Schedule:
    """Build the schedule that :meth:`Schedule.describe` described; the inverse of it.

    :param d: a mapping as ``describe()`` returns, e.g. read back from JSON.
    :returns: a :class:`CronSchedule`, :class:`IntervalSchedule` or :class:`OnceSchedule`.
    :raises InvalidScheduleError: ``d`` is not such a description, or its values are invalid.
    """
    if not isinstance(d, Mapping):
        raise InvalidScheduleError(f"schedule description must be a mapping, not {d!r}")
    kind = d.get("type")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise InvalidScheduleError(
            f"schedule description {d!r}: type must be one of {', '.join(_KEYS)}, not {kind!r}"
        )
    required, optional = _KEYS[kind]
    missing = sorted(required - set(d))
    unknown = sorted(str(key) for key in set(d) - required - optional)
    if missing or unknown:
        raise InvalidScheduleError(
            f"schedule description {d!r}: missing keys {missing}, unknown keys {unknown}"
        )
    if kind == "cron":
        expr, tz = d["expr"], d.get("tz", "UTC")
        if not isinstance(expr, str) or not isinstance(tz, str):
            raise InvalidScheduleError(f"schedule description {d!r}: expr and tz must be strings")
        return CronSchedule(expr, tz)
    if kind == "interval":
        every, start_at = d["every"], d.get("start_at")
        if isinstance(every, bool) or not isinstance(every, (int, float)):
            raise InvalidScheduleError(f"schedule description {d!r}: every must be seconds")
        start = None if start_at is None else _parse_instant(start_at, "start_at")
        return IntervalSchedule(every, start)
    return OnceSchedule(_parse_instant(d["run_at"], "run_at"))
