"""CronSchedule: cron expressions on croniter, with our own field parsing and DST rules.

We parse and validate the fields ourselves and hand croniter a canonical expression of plain
value lists: that gives error messages naming the bad field, and keeps croniter's own
readings of the syntax (it takes "5-5" to mean the whole cycle) out of it.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable, Mapping
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from ._time import checked_utc, from_us, to_us
from .errors import InvalidScheduleError

__all__ = ["CronSchedule"]

logger = logging.getLogger(__name__)

_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)


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
        after = checked_utc(dt, "dt")
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
        low_us, high_us = to_us(low), to_us(high)
        while high_us - low_us > 1:
            middle = (low_us + high_us) // 2
            if reached(from_us(middle)):
                high_us = middle
            else:
                low_us = middle
        return from_us(high_us)

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
