"""When a job runs: the :class:`Schedule` protocol and its three implementations.

A schedule is a pure function of time: given an instant it names the next occurrence strictly
after it, and nothing more. It keeps no state about runs; deciding which occurrences were
missed, claimed or already run is the scheduler's business (:func:`latest_due` is the one
helper it gets for coalescing a backlog). Instants go in as any ``datetime`` (naive ones are the
machine's local time) and always come out as tz-aware UTC datetimes.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable, Mapping, Optional, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from ._time import Duration, to_seconds, to_utc
from .errors import InvalidScheduleError

__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "OnceSchedule",
    "Schedule",
    "latest_due",
    "schedule_from_description",
]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
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


def _utc(value: object, what: str) -> datetime:
    """``to_utc`` that reports every bad input as :class:`InvalidScheduleError`."""
    if not isinstance(value, datetime):
        raise InvalidScheduleError(f"{what} must be a datetime, not {value!r}")
    if value.tzinfo is timezone.utc and type(value) is datetime:
        return value  # already what we want: the common case, kept cheap
    try:
        return to_utc(value, what)
    except (OverflowError, ValueError, OSError) as exc:
        raise InvalidScheduleError(f"{what} {value!r} cannot be converted to UTC: {exc}") from exc


def _to_us(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# --------------------------------------------------------------------------------------------
# Cron expressions. We parse and validate the fields ourselves and hand croniter a canonical
# expression of plain value lists: that gives error messages naming the bad field, and keeps
# croniter's own readings of the syntax (it takes "5-5" to mean the whole cycle) out of it.


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int  # top of the cycle: "*" and "a/step" run up to here
    top: int  # largest value the text may name (7 is also Sunday in day-of-week)
    names: Mapping[str, int]
    hint: str


_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DOW_NAMES = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
_SECOND = _FieldSpec("second", 0, 59, 59, {}, "0-59")
_MINUTE = _FieldSpec("minute", 0, 59, 59, {}, "0-59")
_HOUR = _FieldSpec("hour", 0, 23, 23, {}, "0-23")
_DOM = _FieldSpec("day-of-month", 1, 31, 31, {}, "1-31, or L for the last day")
_MONTH = _FieldSpec("month", 1, 12, 12, _MONTH_NAMES, "1-12 or JAN-DEC")
_DOW = _FieldSpec("day-of-week", 0, 6, 7, _DOW_NAMES, "0-7 or SUN-SAT, 0 and 7 being Sunday")

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_FIXED_OFFSET = re.compile(r"UTC([+-])([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?", re.ASCII)
#: Where construction looks for a first occurrence. Cron has no year field, so an expression
#: that fires at all fires within any 400 years (the period of the Gregorian calendar).
_REFERENCE = datetime(2000, 1, 1)
_MAX_YEARS = 400
#: Bound on the hops one next_after takes past gaps; real zones need at most a couple.
_MAX_HOPS = 64


def _parse_field(spec: _FieldSpec, text: str, expr: str) -> tuple[frozenset[int] | None, str]:
    """Return (the values ``text`` selects or ``None`` for all, croniter's form of the field)."""

    def bad(part: str, problem: str) -> InvalidScheduleError:
        where = f"{spec.name} field {text!r}" + ("" if part == text else f": {part!r}")
        return InvalidScheduleError(f"invalid cron expression {expr!r}: {where} {problem}")

    def number(token: str, item: str) -> int:
        if not token:
            raise bad(item, "is missing a value")
        if _DIGITS.fullmatch(token):
            digits = token.lstrip("0") or "0"
            if len(digits) > 4 or not spec.low <= int(digits) <= spec.top:
                raise bad(token, f"is out of range {spec.low}-{spec.top}")
            return int(digits)
        named = spec.names.get(token.lower())
        if named is None:
            raise bad(token, f"is not a valid value (expected {spec.hint})")
        return named

    if text in ("*", "?"):
        if text == "?" and spec not in (_DOM, _DOW):
            raise bad(text, "may not be '?' (only day-of-month and day-of-week may)")
        return None, "*"
    values: set[int] = set()
    specials: list[str] = []
    for item in text.split(","):
        if not item:
            raise bad(text, "has an empty list item")
        if spec is _DOM and item.lower() == "l":
            specials.append("l")
            continue
        if spec is _DOW and "#" in item:
            day_text, _, nth = item.partition("#")
            if nth not in ("1", "2", "3", "4", "5"):
                raise bad(item, "must name the nth weekday as day#1 to day#5")
            specials.append(f"{number(day_text, item) % 7}#{nth}")
            continue
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text):
                raise bad(item, f"has a step {step_text!r} that is not a whole number")
            significant = step_text.lstrip("0")
            if not significant:
                raise bad(item, "has a step of 0")
            step = int(significant) if len(significant) <= 4 else 10_000
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = number(first, item), number(last, item)
        else:
            low = number(base, item)
            high = spec.high if slash else low
        values.update(_expand_range(spec, low, high, step))
    if spec is _DOW and specials and values:
        raise bad(text, "cannot mix day#n with plain day-of-week values")
    canonical = ",".join([str(value) for value in sorted(values)] + specials)
    return frozenset(values), canonical


def _expand_range(spec: _FieldSpec, low: int, high: int, step: int) -> set[int]:
    """Values of ``low-high/step``; a range with ``low > high`` wraps round the cycle."""
    if spec is _DOW:
        # 7 is Sunday as well: "5-7" is Fri-Sun, and "7-2" starts the cycle at Sunday.
        if low > high:
            low %= 7
        if low <= high:
            return {value % 7 for value in range(low, high + 1, step)}
    if low <= high:
        return set(range(low, high + 1, step))
    size = spec.high - spec.low + 1
    span = (high - low) % size
    return {spec.low + (low - spec.low + k) % size for k in range(0, span + 1, step)}


def _resolve_tz(tz: object) -> tuple[tzinfo, str]:
    """Return (the tzinfo, the name :meth:`CronSchedule.describe` writes) for ``tz``."""
    if isinstance(tz, str):
        fixed = _FIXED_OFFSET.fullmatch(tz)
        if fixed:
            sign, hours, minutes, seconds = fixed.groups()
            offset = timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds or 0))
            if offset >= timedelta(hours=24):
                raise InvalidScheduleError(f"unknown time zone {tz!r}: offset out of range")
            return timezone(-offset if sign == "-" else offset), tz
        try:
            return ZoneInfo(tz), tz
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError, OSError: all mean "no such"
            raise InvalidScheduleError(
                f"unknown time zone {tz!r}: not an IANA name such as 'Europe/Berlin'"
            ) from exc
    if not isinstance(tz, tzinfo):
        raise InvalidScheduleError(f"tz must be an IANA zone name or a tzinfo, not {tz!r}")
    zone = getattr(tz, "zone", None)
    if hasattr(tz, "localize") and isinstance(zone, str):
        # pytz zones only work through localize(); the IANA zone of the same name does not
        # need it and gives the same wall-clock rules.
        return _resolve_tz(zone)
    key = getattr(tz, "key", None)
    return tz, key if isinstance(key, str) else str(tz)


class CronSchedule:
    """Occurrences given by a cron expression, evaluated in a time zone.

    The expression has the standard five fields ``minute hour day-of-month month day-of-week``
    or six with a leading seconds field (``second minute hour ...``). Fields take values,
    ``a-b`` ranges (wrapping round when ``a > b``), ``*``, ``/step``, comma lists, month and
    weekday names (``JAN``, ``MON``), 0 or 7 for Sunday, ``?`` for ``*`` in the day fields,
    ``L`` (last day) in day-of-month and ``day#n`` (nth weekday) in day-of-week. The macros
    ``@yearly @annually @monthly @weekly @daily @midnight @hourly`` stand for their usual five
    fields. When both day fields are restricted a day matching either one fires.

    The expression is matched against wall-clock time in ``tz``. Where daylight-saving time
    moves the clock:

    * A wall time that does not exist (the clock jumps forward over it): a job whose hour
      field names particular hours runs once, at the first instant after the gap. A job whose
      hour field covers every hour (``*``) skips it, as cron does.
    * A wall time that happens twice (the clock goes back): a job whose hour field names
      particular hours runs at its first pass only, so each wall time fires at most once. A
      job whose hour field covers every hour (sub-hourly jobs such as ``*/15 * * * *``) runs
      in real time through both passes.

    Either way, :meth:`next_after` is strictly increasing.

    :param expr: the cron expression.
    :param tz: an IANA zone name (``"Europe/Berlin"``), ``"UTC+HH:MM"`` for a fixed offset, or
        a PEP 495 tzinfo such as ``zoneinfo.ZoneInfo``.
    :raises InvalidScheduleError: the expression or zone is invalid, or the expression can
        never fire (``0 0 31 2 *``); the message quotes the input and names the bad part.
    """

    __slots__ = ("_croniter", "_every_hour", "_lock", "expr", "tz", "tz_name")

    expr: str
    tz: tzinfo
    tz_name: str
    _croniter: croniter
    _every_hour: bool
    _lock: threading.Lock

    def __init__(self, expr: str, tz: str | tzinfo = "UTC") -> None:
        if not isinstance(expr, str):
            raise InvalidScheduleError(f"cron expression must be a str, not {expr!r}")
        zone, tz_name = _resolve_tz(tz)
        fields = expr.split()
        if len(fields) == 1 and fields[0].startswith("@"):
            macro = _MACROS.get(fields[0].lower())
            if macro is None:
                raise InvalidScheduleError(
                    f"invalid cron expression {expr!r}: unknown macro {fields[0]!r};"
                    f" expected one of {', '.join(_MACROS)}"
                )
            fields = macro.split()
        if len(fields) not in (5, 6):
            raise InvalidScheduleError(
                f"invalid cron expression {expr!r} has {len(fields)} fields; expected 5"
                " (min hour dom month dow) or 6 (sec min hour dom month dow)"
            )
        specs = (_SECOND,) * (len(fields) - 5) + (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)
        parsed = [_parse_field(spec, text, expr) for spec, text in zip(specs, fields)]
        *_, (hours, _), (days, day_text), (months, _), (weekdays, weekday_text) = parsed
        if days is not None and "#" in weekday_text:
            # croniter would intersect the two day fields here, not take either as cron does.
            raise InvalidScheduleError(
                f"invalid cron expression {expr!r}: day-of-week field {fields[-1]!r} uses day#n,"
                f" so day-of-month must be '*' or '?', not {fields[-3]!r}"
            )
        if weekdays is None and days and "l" not in day_text.split(","):
            in_months = months if months is not None else range(1, 13)
            if all(day > _MAX_DAYS[month] for day in days for month in in_months):
                raise InvalidScheduleError(
                    f"invalid cron expression {expr!r} never fires: day-of-month field"
                    f" {fields[-3]!r} does not occur in month field {fields[-2]!r}"
                )
        # croniter wants the seconds field last.
        canonical = " ".join([text for _, text in parsed[-5:]] + [t for _, t in parsed[:-5]])
        try:
            cron = croniter(
                canonical, _REFERENCE, ret_type=datetime, max_years_between_matches=_MAX_YEARS
            )
            cron.get_next(datetime)
        except CroniterBadDateError as exc:
            raise InvalidScheduleError(f"invalid cron expression {expr!r} never fires") from exc
        except Exception as exc:  # croniter raises a zoo of types for what it rejects
            raise InvalidScheduleError(f"invalid cron expression {expr!r}: {exc}") from exc
        set_ = object.__setattr__
        set_(self, "expr", expr)
        set_(self, "tz", zone)
        set_(self, "tz_name", tz_name)
        set_(self, "_every_hour", hours is None or len(hours) == 24)
        set_(self, "_croniter", cron)
        # croniter keeps its position in the object: searches must not interleave.
        set_(self, "_lock", threading.Lock())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[type[CronSchedule], tuple[str, tzinfo]]:
        return type(self), (self.expr, self.tz)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(expr={self.expr!r}, tz={self.tz_name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronSchedule):
            return NotImplemented
        return (self.expr, self.tz_name) == (other.expr, other.tz_name)

    def __hash__(self) -> int:
        return hash((CronSchedule, self.expr, self.tz_name))

    def describe(self) -> dict[str, object]:
        """``{"type": "cron", "expr": ..., "tz": tz_name}``.

        Zones given by IANA name or as a fixed offset (``UTC+HH:MM``) read back; other tzinfo
        objects are described by ``str(tz)``, which :func:`schedule_from_description` rejects.
        """
        return {"type": "cron", "expr": self.expr, "tz": self.tz_name}

    def next_after(self, dt: datetime) -> datetime | None:
        """The first occurrence strictly after ``dt``; see :class:`Schedule`.

        ``None`` only once the next occurrence lies beyond what ``datetime`` can represent.
        """
        after = _utc(dt, "dt")
        try:
            return self._next_instant(after)
        except (OverflowError, ValueError):
            # Arithmetic ran off either end of datetime's range: nothing representable follows.
            return None
        except Exception:
            logger.exception(
                "%r: next_after(%s) failed; treating as no further occurrence", self, after
            )
            return None

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz).replace(tzinfo=None)

    def _instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants at which the clock in ``tz`` shows ``wall``: 0, 1 or 2."""
        found: list[datetime] = []
        for fold in (0, 1):
            instant = wall.replace(tzinfo=self.tz, fold=fold).astimezone(timezone.utc)
            if self._wall(instant) == wall and instant not in found:
                found.append(instant)
        return sorted(found)

    def _first_instant(
        self, low: datetime, high: datetime, reached: Callable[[datetime], bool]
    ) -> datetime:
        """Smallest instant in ``(low, high]`` for which ``reached`` holds, by bisection.

        ``reached`` must be false at ``low``, true at ``high`` and flip once in between.
        """
        low_us, high_us = _to_us(low), _to_us(high)
        while high_us - low_us > 1:
            middle = (low_us + high_us) // 2
            if reached(_from_us(middle)):
                high_us = middle
            else:
                low_us = middle
        return _from_us(high_us)

    def _gap_end(self, skipped: datetime) -> datetime:
        """The instant a gap in the wall clock that swallows ``skipped`` closes."""
        # With PEP 495 the two folds of a skipped time map to instants either side of the
        # transition; a tzinfo without folds gives one instant, so search a day either way.
        below, above = sorted(
            skipped.replace(tzinfo=self.tz, fold=fold).astimezone(timezone.utc) for fold in (0, 1)
        )
        if below == above:
            below, above = below - timedelta(days=1), above + timedelta(days=1)
        return self._first_instant(below, above, lambda instant: self._wall(instant) > skipped)

    def _next_wall(self, after: datetime) -> datetime | None:
        """The first wall time strictly after the naive ``after`` that matches the fields."""
        # Matches fall on whole seconds, so the first one after ``after`` is the first one
        # after its whole second; whole-second floats also survive croniter's timestamps.
        with self._lock:
            try:
                found = self._croniter.get_next(datetime, start_time=after.replace(microsecond=0))
            except CroniterBadDateError:
                return None
        if not isinstance(found, datetime) or found <= after:
            raise RuntimeError(f"croniter returned {found!r} for a start of {after!r}")
        return found

    def _at_or_after(self, wall: datetime) -> datetime | None:
        if wall.microsecond:
            return self._next_wall(wall)
        return self._next_wall(wall - _ONE_SECOND)

    def _next_instant(self, after: datetime) -> datetime | None:
        wall = self._wall(after)
        here = self._instants(wall)
        if len(here) < 2:
            return self._resolve(self._next_wall(wall), after)
        # ``after`` lies in a repeated hour. Its walls [start, end) happen once before the
        # transition and once after, and the order of occurrences is not the wall order.
        offset = here[1].astimezone(self.tz).utcoffset()
        transition = self._first_instant(
            here[0], here[1], lambda instant: instant.astimezone(self.tz).utcoffset() == offset
        )
        start = self._wall(transition)
        end = self._wall(transition - _ONE_MICROSECOND) + _ONE_MICROSECOND
        candidate = self._next_wall(wall)
        if after < transition:
            # The rest of the first pass comes before anything in the second.
            if candidate is not None and candidate < end:
                return self._instants(candidate)[0]
            if self._every_hour:
                again = self._at_or_after(start)
                if again is not None and again < end:
                    return self._instants(again)[-1]
        elif candidate is not None and candidate < end:
            if self._every_hour:
                return self._instants(candidate)[-1]
            candidate = self._at_or_after(end)
        return self._resolve(candidate, after)

    def _resolve(self, wall: datetime | None, after: datetime) -> datetime | None:
        """Map matching walls from ``wall`` on to the first instant after ``after``."""
        for _ in range(_MAX_HOPS):
            if wall is None:
                return None
            instants = self._instants(wall)
            if instants:
                for instant in instants if self._every_hour else instants[:1]:
                    if instant > after:
                        return instant
                wall = self._next_wall(wall)
                continue
            gap_end = self._gap_end(wall)
            if not self._every_hour and gap_end > after:
                return gap_end
            resumed = self._wall(gap_end)
            wall = self._at_or_after(resumed) if resumed > wall else self._next_wall(wall)
        logger.warning("%r: no occurrence found after %s within %d hops", self, after, _MAX_HOPS)
        return None


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
                          start_at=None if start_at is None else _utc(start_at, "start_at"),
                          _every_us=micros)

    def describe(self) -> dict[str, object]:
        """``{"type": "interval", "every": seconds, "start_at": ISO 8601 or None}``."""
        start = None if self.start_at is None else self.start_at.isoformat()
        return {"type": "interval", "every": self.every, "start_at": start}

    def next_after(self, dt: datetime) -> datetime | None:
        """The first occurrence strictly after ``dt``; see :class:`Schedule`."""
        after = _utc(dt, "dt")
        step: int = self.__dict__["_every_us"]
        try:
            if self.start_at is None:
                return after + timedelta(microseconds=step)
            if after < self.start_at:
                return self.start_at
            elapsed = _to_us(after) - _to_us(self.start_at)
            return self.start_at + timedelta(microseconds=(elapsed // step + 1) * step)
        except OverflowError:
            return None

    def _latest(self, first: datetime, now: datetime) -> datetime:
        """Latest occurrence in ``[first, now]`` reachable from ``first``, or ``first``."""
        step: int = self.__dict__["_every_us"]
        if self.start_at is None:
            return first + timedelta(microseconds=(_to_us(now) - _to_us(first)) // step * step)
        if now < self.start_at:
            return first
        elapsed = _to_us(now) - _to_us(self.start_at)
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
        object.__setattr__(self, "run_at", _utc(self.run_at, "run_at"))

    def describe(self) -> dict[str, object]:
        """``{"type": "once", "run_at": ISO 8601}``."""
        return {"type": "once", "run_at": self.run_at.isoformat()}

    def next_after(self, dt: datetime) -> datetime | None:
        """``run_at`` if it is after ``dt``, else ``None``."""
        return self.run_at if self.run_at > _utc(dt, "dt") else None


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
    start, end = _utc(first, "first"), _utc(now, "now")
    if start > end:
        latest = start
    elif isinstance(schedule, IntervalSchedule):
        latest = schedule._latest(start, end)
    elif isinstance(schedule, CronSchedule):
        latest = _search_latest(schedule, start, end)
    else:
        latest = _walk_latest(schedule, start, end)
    following = schedule.next_after(latest)
    return latest, None if following is None else _utc(following, "next_after()")


def _walk_latest(schedule: Schedule, first: datetime, now: datetime) -> datetime:
    current = first
    for _ in range(_MAX_WALK):
        following = schedule.next_after(current)
        if following is None:
            return current
        following = _utc(following, "next_after()")
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
        following = _utc(following, "next_after()")
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
