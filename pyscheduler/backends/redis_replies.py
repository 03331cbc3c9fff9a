"""What RedisBackend's scripts return, parsed and checked, and the arguments they take.

Nothing read from Redis is unpickled or evaluated: a reply is JSON or RESP of plain values,
checked field by field, and a value not of our form raises
:class:`~pyscheduler.errors.CorruptStateError` (or :class:`~pyscheduler.errors.BackendError`
for a reply that is not a script's), which :mod:`.redis` turns into a reset of the job.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from ..errors import BackendError, CorruptStateError
from .base import Claim, DueEntry, InstanceInfo, JobState, Outcome, encodable, run_outcome
from .redis_history import json_record

__all__ = [
    "STATE_FIELDS",
    "ScriptArg",
    "flag",
    "instance_record",
    "json_arg",
    "optional_arg",
    "optional_int",
    "outcome_rows",
    "parse_claim",
    "parse_due_entry",
    "parse_instance",
    "parse_reply",
    "parse_state",
    "reply_text",
]

_T = TypeVar("_T")
#: A script argument.
ScriptArg = Union[str, int]


def parse_reply(address: str, build: Callable[[], _T]) -> _T:
    try:
        return build()
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"unexpected reply from Redis at {address}: {exc!r}") from exc


#: The fields of a state reply, in the order of ``STATE_FIELDS`` in ``common.lua``; the
#: description (``def``) follows where the script was asked for it.
STATE_FIELDS = ("v", "next_run", "due", "paused", "fence", "run_count", "failure_count",
                 "consecutive_failures", "last_run", "last_success", "last_error",
                 "last_duration", "status", "scheduled", "attempt", "last_failed", "owner")


def parse_state(name: str, raw: Union[bytes, str],
                 description: Optional[dict[str, object]] = None) -> JobState:
    """A :class:`JobState` from a state reply (a JSON array of the fields' text);
    ``description`` is used when the reply has none (else an empty one).

    :raises CorruptStateError: a field is missing or not of our form.
    """
    try:
        # This runs for every job a reply names (a UnicodeDecodeError is a ValueError, so
        # invalid text counts as corrupt like a missing field does).
        values = json.loads(raw.decode("utf-8") if type(raw) is bytes else raw)
        if (type(values) is not list or len(values) - len(STATE_FIELDS) not in (0, 1)
                or set(map(type, values)) != {str}):
            raise ValueError("a field is missing or not text")
        (version, next_run, due, paused, fence, run_count, failure_count,
         consecutive_failures, last_run, last_success, last_error, last_duration, status,
         scheduled, attempt, last_failed, owner, *definition) = values
        if version != "1":
            raise ValueError("unknown layout version")
        if definition:
            description = json.loads(definition[0])
            if not isinstance(description, dict):
                raise ValueError("the description is not a JSON object")
        elif description is None:
            description = {}
        in_flight = status != ""
        return JobState(
            name, optional_int(next_run), optional_int(due), flag(paused), int(fence),
            int(run_count), int(failure_count), int(consecutive_failures), optional_int(last_run),
            optional_int(last_success), last_error,
            float(last_duration) if last_duration else None,
            status, int(scheduled) if in_flight else None, int(attempt) if in_flight else 0,
            flag(last_failed), description, owner if status == "running" else "")
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CorruptStateError(f"{type(exc).__name__}: {exc}") from exc


#: The fields of an instance record, with their types (``bool`` is never an ``int`` here).
INSTANCE_FIELDS: tuple[tuple[str, type], ...] = (
    ("instance_id", str), ("host", str), ("pid", int), ("started_at_ms", int),
    ("library_version", str), ("max_concurrent", int), ("last_heartbeat_ms", int))


def instance_record(info: InstanceInfo) -> dict[str, object]:
    """What a heartbeat stores, but ``last_heartbeat_ms``, which the script sets."""
    return {"v": 1, "instance_id": info.instance_id, "host": info.host, "pid": int(info.pid),
            "started_at_ms": int(info.started_at_ms), "library_version": info.library_version,
            "max_concurrent": int(info.max_concurrent), "running": list(info.running),
            "jobs_digest": info.jobs_digest}


def parse_instance(instance_id: str, raw: object) -> InstanceInfo:
    """An :class:`InstanceInfo` from a stored record, checked field by field.

    :raises CorruptStateError: the record is not a JSON object of our form, or names another
        instance than the member it was found under.
    """
    try:
        values = json_record(raw)
        fields: dict[str, Any] = {}
        for name, kind in INSTANCE_FIELDS:
            if type(values.get(name)) is not kind:
                raise ValueError(f"field {name} is missing or not a {kind.__name__}")
            fields[name] = values[name]
        running = values.get("running")
        if type(running) is not list or not all(type(name) is str for name in running):
            raise ValueError("field running is not a list of names")
        if fields["instance_id"] != instance_id:
            raise ValueError("the record names another instance")
        digest = values.get("jobs_digest", "")  # absent from records of older versions
        if type(digest) is not str:
            raise ValueError("field jobs_digest is not a string")
        return InstanceInfo(running=tuple(running), jobs_digest=digest, **fields)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CorruptStateError(f"{type(exc).__name__}: {exc}") from exc


def parse_claim(row: list[Any]) -> Claim:
    name, owner, fence, scheduled, attempt, kind, claimed_at, lease_ms = row
    return Claim(str(name), str(owner), int(fence), int(scheduled), int(attempt), str(kind),
                 int(claimed_at), int(lease_ms))


def parse_due_entry(row: list[Any]) -> DueEntry:
    """A due entry from a RESP array (bytes) or a JSON array (text and numbers)."""
    name, due, next_run, missing, removed, superseded = row
    return DueEntry(reply_text(name), optional_int(reply_text(due)),
                    optional_int(reply_text(next_run)),
                    missing=bool(missing), removed=bool(removed), superseded=bool(superseded))


def reply_text(value: object) -> str:
    """A reply value as text, whether or not the client decodes responses."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def optional_arg(value: Optional[int]) -> ScriptArg:
    return "" if value is None else int(value)


def outcome_rows(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    return [[outcome.lease.job_name, outcome.lease.owner, int(outcome.lease.fence),
             int(outcome.succeeded), encodable(outcome.error), repr(float(outcome.duration)),
             optional_arg(outcome.retry_delay_ms), int(outcome.still_running), run_outcome(outcome),
             max(0, int(outcome.history_limit))] for outcome in outcomes]


def json_arg(rows: list[list[Any]]) -> str:
    """Rows of script values as one JSON argument."""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def optional_int(value: str) -> Optional[int]:
    return None if value == "" else int(value)


def flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {value!r}")
    return value == "1"
