"""What an instance runs: job specs shared by the harness, the instances and the checker.

A :class:`JobSpec` is plain data (it crosses to the instance processes as JSON) naming a
group of jobs, their schedule and how their handlers behave; the checker rebuilds the
schedules from it to know which occurrences were due.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any, Optional

from pyscheduler import CronSchedule, IntervalSchedule, OnceSchedule, RetryPolicy, Schedule

__all__ = ["BEHAVIOURS", "JobSpec", "dump_specs", "load_specs"]

#: How a handler behaves (on its first attempt; later attempts are ``short``, except ``long``):
#: ``short`` sleeps ``seconds``; ``long`` sleeps ``seconds`` on its token, stopping when
#: cancelled; ``ignore_cancel_then_fail`` sleeps ``seconds`` ignoring its token, then raises;
#: ``gil`` holds the GIL ``seconds`` in a C call (every thread of the process stops), then
#: writes its result without looking at its token.
BEHAVIOURS = ("short", "long", "ignore_cancel_then_fail", "gil")


@dataclass(frozen=True)
class JobSpec:
    """``count`` jobs named ``<name>-<i>`` on one schedule: ``every`` seconds from
    ``start_at`` (epoch seconds), a ``cron`` expression, or once at ``once_at``."""

    name: str
    count: int = 1
    every: Optional[float] = None
    start_at: Optional[float] = None
    cron: Optional[str] = None
    once_at: Optional[float] = None
    behaviour: str = "short"
    seconds: float = 0.001
    timeout: Optional[float] = None
    retries: int = 0
    retry_delay: float = 0.1
    recover: bool = True
    misfire_grace: Optional[float] = None

    def __post_init__(self) -> None:
        assert self.behaviour in BEHAVIOURS, self.behaviour
        assert [self.every, self.cron, self.once_at].count(None) == 2, "one schedule"

    def names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.count)]

    def schedule(self) -> Schedule:
        if self.every is not None:
            start = None if self.start_at is None else _utc(self.start_at)
            return IntervalSchedule(self.every, start_at=start)
        if self.cron is not None:
            return CronSchedule(self.cron, "UTC")
        assert self.once_at is not None
        return OnceSchedule(_utc(self.once_at))

    def retry_policy(self) -> Optional[RetryPolicy]:
        if not self.retries:
            return None
        return RetryPolicy(max_retries=self.retries, initial_interval=self.retry_delay,
                           strategy="fixed", jitter=0.0, retry_on=(Exception,))

    def occurrences_ms(self, start: float, end: float) -> list[int]:
        """The nominal times (epoch ms) of this schedule in ``[start, end]`` (epoch seconds)."""
        schedule = self.schedule()
        found: list[int] = []
        at = schedule.next_after(_utc(start - 0.001))
        while at is not None and at.timestamp() <= end:
            found.append(round(at.timestamp() * 1000))
            at = schedule.next_after(at)
        return found


def dump_specs(specs: list[JobSpec]) -> str:
    return json.dumps([asdict(spec) for spec in specs])


def load_specs(text: str) -> list[JobSpec]:
    known = {f.name for f in fields(JobSpec)}
    rows: list[dict[str, Any]] = json.loads(text)
    return [JobSpec(**{k: v for k, v in row.items() if k in known}) for row in rows]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)
