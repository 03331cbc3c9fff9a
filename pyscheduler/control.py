"""Control: operate a scheduler group through its backend, from any process that reaches it.

An operator's view of the group, for tools (the CLI, a dashboard, a metrics exporter) and
scripts: every job the group stores, whoever registered it, with its state; the live
instances; the run history; pause, resume, trigger and remove. It needs no
:class:`~pyscheduler.Scheduler` and no registered job: everything is read from and done
through the backend's own transitions, so the due index stays right and every scheduler of
the group sees a change at its next tick.

It is not a scheduler: it runs nothing, and it holds no state between calls. What it returns
are plain snapshots (:class:`JobInfo`, :class:`HistoryEntry`, with ``to_dict()`` for JSON),
built from what the backend stores; anything read there is treated as untrusted text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional

from ._time import from_ms, iso
from .backends.base import Backend, DueEntry, InstanceInfo, JobState, RunRecord
from .errors import ConfigError, JobNotFoundError
from .identity import instance_of
from .job import JobStatus, metadata_from_state

__all__ = ["Control", "HistoryEntry", "JobInfo", "describe_schedule"]

#: Jobs read per backend call by :meth:`Control.jobs`: one call over 100,000 jobs would
#: block Redis for seconds.
_STATES_CHUNK = 1_000


@dataclass(frozen=True)
class JobInfo:
    """One job of the group, as the backend stores it.

    The fields are :class:`~pyscheduler.JobMetadata`'s (``status``, times, counters), plus
    ``name``, a readable ``schedule``, ``paused``, and the occurrence in flight: ``holder``
    (the instance running it now), its ``fence`` and ``attempt`` (``0`` when none).
    """

    name: str
    status: JobStatus
    schedule: str
    next_run_at: Optional[datetime]
    last_run_at: Optional[datetime]
    last_success_at: Optional[datetime]
    last_error: str
    last_duration: Optional[float]
    run_count: int
    failure_count: int
    consecutive_failures: int
    paused: bool
    holder: Optional[str]
    fence: int
    attempt: int

    @classmethod
    def from_state(cls, state: JobState) -> JobInfo:
        """The job as ``state`` (read from a backend) shows it."""
        meta = metadata_from_state(state)
        return cls(
            name=state.name, status=meta.status,
            schedule=describe_schedule(state.description.get("schedule")),
            next_run_at=meta.next_run_at, last_run_at=meta.last_run_at,
            last_success_at=meta.last_success_at, last_error=meta.last_error,
            last_duration=meta.last_duration, run_count=meta.run_count,
            failure_count=meta.failure_count, consecutive_failures=meta.consecutive_failures,
            paused=state.paused, holder=instance_of(state.owner) or None, fence=state.fence,
            attempt=state.occurrence_attempt)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the fields by name, times as UTC ISO 8601 (to the millisecond), the
        status as its value."""
        return {
            "name": self.name, "status": self.status.value, "schedule": self.schedule,
            "next_run_at": iso(self.next_run_at), "last_run_at": iso(self.last_run_at),
            "last_success_at": iso(self.last_success_at), "last_error": self.last_error,
            "last_duration": self.last_duration, "run_count": self.run_count,
            "failure_count": self.failure_count,
            "consecutive_failures": self.consecutive_failures, "paused": self.paused,
            "holder": self.holder, "fence": self.fence, "attempt": self.attempt,
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One finished attempt of the run history.

    ``kind`` is how its occurrence was claimed (``regular``, ``retry``, ``recovery``,
    ``manual``), ``outcome`` how it ended (a :class:`~pyscheduler.backends.base.RunOutcome`:
    ``succeeded``, ``failed``, ``timed_out``, or ``abandoned`` when its holder stopped
    mid-run and its recovery is exhausted or disabled: then ``instance_id`` is the holder's,
    ``started_at`` when it claimed the run and ``duration`` ``0.0``), ``error`` its error text
    cut to :data:`~pyscheduler.backends.base.HISTORY_ERROR_BYTES` (``""`` for none).
    """

    job: str
    scheduled_at: datetime
    attempt: int
    kind: str
    instance_id: str
    fence: int
    started_at: datetime
    duration: float
    outcome: str
    error: str

    @classmethod
    def from_record(cls, record: RunRecord) -> HistoryEntry:
        """The entry of a record read from a backend."""
        return cls(job=record.job, scheduled_at=from_ms(record.scheduled_ms),
                   attempt=record.attempt, kind=record.kind,
                   instance_id=instance_of(record.owner), fence=record.fence,
                   started_at=from_ms(record.started_ms), duration=record.duration,
                   outcome=record.outcome, error=record.error)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the fields by name, times as UTC ISO 8601 (to the millisecond)."""
        return {
            "job": self.job, "scheduled_at": iso(self.scheduled_at), "attempt": self.attempt,
            "kind": self.kind, "instance_id": self.instance_id, "fence": self.fence,
            "started_at": iso(self.started_at), "duration": self.duration,
            "outcome": self.outcome, "error": self.error,
        }


class Control:
    """Operate a scheduler group through its backend: no scheduler running, no jobs
    registered.

    :param backend: the group's backend. It is neither opened nor closed here (a backend
        passed in is the caller's); :meth:`from_url` builds one that :meth:`close` closes.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._owns_backend = False

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str = "pyscheduler",
                 cluster: bool = False, **client_options: Any) -> Control:
        """A control over the group ``key_prefix`` on the Redis at ``url`` (``redis://``,
        ``rediss://``, ``unix://``; with ``cluster``, a node of a Redis Cluster), on a client
        of its own that :meth:`close` closes. The group's partitions are read from Redis.
        ``client_options`` go to redis-py's client (``socket_connect_timeout=5``, say); the
        URL's query options win over them.

        Nothing is sent until the first call, which raises
        :class:`~pyscheduler.BackendUnavailableError` if the server cannot be reached.

        :raises ConfigError: ``url`` or ``key_prefix`` is not usable.
        """
        from .backends.redis import RedisBackend

        if not key_prefix:
            raise ConfigError("key_prefix", "must not be empty")
        try:
            backend = RedisBackend.from_url(url, key_prefix=key_prefix, cluster=cluster,
                                            partitions=None, **client_options)
        except ValueError as exc:  # redis-py's word on a malformed URL
            raise ConfigError("redis_url", str(exc)) from None
        control = cls(backend)
        control._owns_backend = True
        return control

    def close(self) -> None:
        """Close the backend if :meth:`from_url` built it; a backend passed in stays open."""
        if self._owns_backend:
            self._owns_backend = False
            self.backend.close()

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Control({self.backend!r})"

    # -- jobs --------------------------------------------------------------------------------

    def jobs(self) -> list[JobInfo]:
        """Every job of the group, whoever registered it, sorted by name."""
        names = sorted(self.backend.job_names())
        infos: list[JobInfo] = []
        for start in range(0, len(names), _STATES_CHUNK):
            states = self.backend.get_states(names[start:start + _STATES_CHUNK])
            # None: removed (or reset) between the two calls
            infos += [JobInfo.from_state(state) for state in states if state is not None]
        return infos

    def job(self, name: str) -> JobInfo:
        """One job of the group.

        :raises JobNotFoundError: the group has no job of that name.
        """
        return JobInfo.from_state(self._state(name))

    def pause(self, name: str) -> JobInfo:
        """Run no occurrence of the job until :meth:`resume` (one in flight goes on).

        :returns: the job's state once paused.
        :raises JobNotFoundError: the group has no job of that name.
        """
        return self._manage(name, self.backend.pause)

    def resume(self, name: str) -> JobInfo:
        """Undo :meth:`pause`. :raises JobNotFoundError: no such job in the group."""
        return self._manage(name, self.backend.resume)

    def trigger(self, name: str) -> JobInfo:
        """Run an extra occurrence now, claimed by whichever instance of the group that has
        the job claims it first (after the occurrence in flight, if any); a paused job runs
        it once resumed.

        :raises JobNotFoundError: the group has no job of that name.
        """
        return self._manage(name, self.backend.run_now)

    def remove(self, name: str) -> None:
        """Drop the job, its state and its run history from the group; every scheduler that
        registered it drops it at its next tick (it is not re-created until registered
        again explicitly, e.g. by a restarted instance).

        :raises JobNotFoundError: the group has no job of that name.
        """
        if not self.backend.remove(name):
            raise JobNotFoundError(name)

    def _manage(self, name: str, operation: Callable[[str], DueEntry]) -> JobInfo:
        if operation(name).missing:
            raise JobNotFoundError(name)
        return self.job(name)

    def _state(self, name: str) -> JobState:
        (state,) = self.backend.get_states([name])
        if state is None:
            raise JobNotFoundError(name)
        return state

    # -- instances and history ---------------------------------------------------------------

    def instances(self) -> list[InstanceInfo]:
        """The group's live instances, sorted by id (see
        :meth:`~pyscheduler.backends.base.Backend.instances`).

        :raises NotImplementedError: the backend does not keep live instances.
        """
        return sorted(self.backend.instances(), key=lambda info: info.instance_id)

    def history(self, name: Optional[str] = None, limit: int = 50) -> list[HistoryEntry]:
        """The run history, newest first: the job's last ``limit`` finished attempts, or with
        ``name`` ``None`` the group's across jobs.

        How much is kept is the schedulers' ``history_limit`` (per job) and
        :data:`~pyscheduler.backends.base.GROUP_HISTORY_LIMIT` (the group); a backend that
        keeps no history has none to show.

        :raises JobNotFoundError: ``name`` is not a job of the group.
        :raises ValueError: ``limit`` is negative or not an integer.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
        if name is not None:
            self._state(name)
        if limit == 0:
            return []
        try:
            records = self.backend.history(name, limit)
        except NotImplementedError:
            return []
        return [HistoryEntry.from_record(record) for record in records[:limit]]


def describe_schedule(description: object) -> str:
    """A stored schedule description (``Schedule.describe()``) as a line for people:
    ``cron 0 * * * * (UTC)``, ``every 30s``, ``once at 2030-01-01T00:00:00+00:00``.

    The description was read from the backend, so it may be anything: what is not of the
    known forms reads as its ``type``, or ``unknown``.
    """
    if not isinstance(description, dict):
        return "unknown"
    kind = description.get("type")
    if kind == "cron" and isinstance(description.get("expr"), str):
        return f"cron {description['expr']} ({description.get('tz') or 'UTC'})"
    every = description.get("every")
    if kind == "interval" and isinstance(every, (int, float)) and not isinstance(every, bool):
        start = description.get("start_at")
        return f"every {_duration(float(every))}" + (f" from {start}" if start else "")
    if kind == "once" and isinstance(description.get("run_at"), str):
        return f"once at {description['run_at']}"
    return str(kind) if isinstance(kind, str) and kind else "unknown"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
