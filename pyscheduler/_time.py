"""Conversions at the boundary: durations, instants and whole milliseconds.

Durations are float seconds inside the library; instants are tz-aware UTC datetimes, and the
backends store them as integer milliseconds since the epoch.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Optional, Union

from .errors import InvalidScheduleError

__all__ = ["Duration", "checked_utc", "from_ms", "from_us", "iso", "to_ms", "to_seconds",
           "to_us", "to_utc"]

#: A duration as float seconds or a ``timedelta``.
Duration = Union[float, int, timedelta]


def to_seconds(value: Duration, what: str) -> float:
    """Return ``value`` as float seconds, or raise ``TypeError`` naming ``what``."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be seconds (int/float) or a timedelta, not {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{what} must be a finite number of seconds, not {value!r}")
    return seconds


def to_utc(value: datetime, what: str) -> datetime:
    """Return ``value`` converted to UTC; a naive datetime is taken as the machine's local time.

    That is what ``datetime.astimezone`` does, so ``datetime.now() + timedelta(hours=1)`` means
    what its author meant.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {value!r}")
    return value.astimezone(timezone.utc)


def to_ms(value: datetime) -> int:
    """Whole epoch milliseconds of a tz-aware instant, rounded up.

    Rounding up keeps a stored occurrence from ever being due before its schedule says.
    """
    delta = value - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return -((-micros) // 1000)


def from_ms(ms: int) -> datetime:
    """The tz-aware UTC instant of ``ms`` epoch milliseconds."""
    return _EPOCH + timedelta(milliseconds=ms)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(value: Optional[datetime]) -> Optional[str]:
    """An instant as the ``to_dict()`` methods write it for JSON: UTC ISO 8601 to the
    millisecond (``2030-01-01T00:00:00.000+00:00``), or ``None``."""
    return None if value is None else value.astimezone(timezone.utc).isoformat(
        timespec="milliseconds")


def checked_utc(value: object, what: str) -> datetime:
    """:func:`to_utc` for schedules: every bad input is an :class:`InvalidScheduleError`."""
    if not isinstance(value, datetime):
        raise InvalidScheduleError(f"{what} must be a datetime, not {value!r}")
    if value.tzinfo is timezone.utc and type(value) is datetime:
        return value  # already what we want: the common case, kept cheap
    try:
        return to_utc(value, what)
    except (OverflowError, ValueError, OSError) as exc:
        raise InvalidScheduleError(f"{what} {value!r} cannot be converted to UTC: {exc}") from exc


def to_us(value: datetime) -> int:
    """Whole epoch microseconds of a tz-aware instant."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(micros: int) -> datetime:
    """The tz-aware UTC instant of ``micros`` epoch microseconds."""
    return _EPOCH + timedelta(microseconds=micros)
