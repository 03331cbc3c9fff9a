"""The run history as RedisBackend stores it: one JSON object per finished attempt, read back
field by field.

The Lua scripts (``record_attempt`` in ``lua/common.lua``, called by finish and by a claim
that abandons an occurrence) write each record as a JSON object of text values (integers as
decimal strings, exact past 2^53 where Lua's number formatting is not), pushed on the job's
list and the group's. Anything may have written those keys, so a record is accepted only if
every field is of our form; this module never evaluates what it reads.
"""

from __future__ import annotations

import json
import math
import re

from ..errors import CorruptStateError
from .base import HISTORY_ERROR_BYTES, OccurrenceKind, RunOutcome, RunRecord

__all__ = ["json_record", "parse_dated_run"]

_INTEGER = re.compile(r"-?[0-9]{1,17}")
#: The latest instant a ``datetime`` holds (9999-12-31), in epoch ms: later ones are not ours.
_MAX_MS = 253_402_300_799_999
_KINDS = frozenset({OccurrenceKind.REGULAR, OccurrenceKind.RETRY, OccurrenceKind.RECOVERY,
                    OccurrenceKind.MANUAL})
_OUTCOMES = frozenset({RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.TIMED_OUT,
                       RunOutcome.ABANDONED})


def parse_dated_run(raw: object) -> tuple[int, RunRecord]:
    """A :class:`RunRecord` from a stored record, with when the record was written (µs, on
    the clock of the server that holds it): what a partitioned group's history is merged by.
    Records written before that date was kept count as written when their handler returned.

    :raises CorruptStateError: the record is not a JSON object of our form.
    """
    try:
        values = json_record(raw)
        text = {name: _text(values, name)
                for name in ("job", "kind", "owner", "outcome", "error", "duration")}
        if not text["job"]:
            raise ValueError("field job is empty")
        if text["kind"] not in _KINDS:
            raise ValueError("unknown occurrence kind")
        if text["outcome"] not in _OUTCOMES:
            raise ValueError("unknown outcome")
        if len(text["error"].encode("utf-8", "backslashreplace")) > HISTORY_ERROR_BYTES:
            raise ValueError("field error is longer than its bound")
        duration = float(text["duration"])
        if not math.isfinite(duration) or duration < 0:
            raise ValueError("field duration is not a finite, non-negative number")
        record = RunRecord(
            job=text["job"], scheduled_ms=_integer(values, "scheduled", 0, _MAX_MS),
            attempt=_integer(values, "attempt", 1, _MAX_MS), kind=text["kind"],
            owner=text["owner"], fence=_integer(values, "fence", 0, 2 ** 53),
            started_ms=_integer(values, "started", 0, _MAX_MS), duration=duration,
            outcome=text["outcome"], error=text["error"])
        if "recorded" in values:
            recorded = _integer(values, "recorded", 0, _MAX_MS * 1000)
        else:
            recorded = record.started_ms * 1000 + int(duration * 1_000_000)
        return recorded, record
    except (ValueError, TypeError, RecursionError) as exc:
        raise CorruptStateError(f"{type(exc).__name__}: {exc}") from exc


def json_record(raw: object) -> dict[str, object]:
    """A stored record (instance or history) as the JSON object of layout 1 it must be.

    :raises TypeError, ValueError: it is not (invalid UTF-8 is a ``ValueError``).
    """
    if not isinstance(raw, (bytes, str)):
        raise TypeError(f"a {type(raw).__name__}, not text")
    values = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    if type(values) is not dict or values.get("v") != 1:
        raise ValueError("not a JSON object of layout 1")
    return values


def _text(values: dict[str, object], name: str) -> str:
    value = values.get(name)
    if type(value) is not str:
        raise ValueError(f"field {name} is missing or not text")
    return value


def _integer(values: dict[str, object], name: str, low: int, high: int) -> int:
    text = _text(values, name)
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"field {name} is not an integer")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"field {name} is out of range")
    return number
