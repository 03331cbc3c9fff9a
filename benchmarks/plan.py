"""What to run: the systems, the workloads, and the quick and full grids of runs.

A :class:`RunSpec` describes one measurement (one system, one workload, one set of
parameters). It is plain data: the runner serialises it to JSON for the worker process, and
both sides derive the intended fire times from it with :func:`first_fire_ms`, so the
lateness of a run is computed from the schedule itself, never from what a scheduler reports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "CLUSTER_SYSTEM",
    "COUNT_MARGIN_SECONDS",
    "SYSTEMS",
    "WORKLOADS",
    "RunSpec",
    "first_fire_ms",
    "full_plan",
    "quick_plan",
]

#: every adapter, in table order; the ``*-redis`` ones need the runner's redis-server.
SYSTEMS = (
    "pyscheduler-memory",
    "pyscheduler-redis",
    "apscheduler-memory",
    "apscheduler-redis",
    "schedule",
)

WORKLOADS = ("interval", "burst", "registration", "idle", "cluster")

#: occurrences intended in the last second of a window are not counted, so that a run a
#: little late at the end is not reported as missing.
COUNT_MARGIN_SECONDS = 1.0

#: the system every member of the ``cluster`` workload runs.
CLUSTER_SYSTEM = "pyscheduler-redis"


@dataclass(frozen=True)
class RunSpec:
    """One measurement.

    :ivar system: one of :data:`SYSTEMS`.
    :ivar workload: one of :data:`WORKLOADS`.
    :ivar jobs: how many jobs are registered.
    :ivar every: interval of the ``interval`` and ``cluster`` jobs, in seconds.
    :ivar duration: the measurement window in seconds (``idle``: the CPU sampling window).
    :ivar work_ms: how long each handler sleeps, in milliseconds (0: returns at once).
    :ivar align: ``"aligned"`` (every job's first fire at the same instant) or ``"spread"``
        (first fires spread evenly over one interval).
    :ivar processes: scheduler processes sharing one backend (``cluster``: 3).
    :ivar warmup: seconds between ``start()`` and the ``idle`` sampling window.
    :ivar t0_ms: the first (aligned) fire instant, epoch milliseconds; set by the runner.
    """

    system: str
    workload: str
    jobs: int
    every: float = 1.0
    duration: float = 0.0
    work_ms: float = 0.0
    align: str = "aligned"
    processes: int = 1
    warmup: float = 0.0
    t0_ms: Optional[int] = None

    @property
    def uses_redis(self) -> bool:
        return self.system.endswith("-redis")

    @property
    def label(self) -> str:
        """Short human description of the parameters, for progress lines and tables."""
        parts = [f"N={self.jobs:,}"]
        if self.workload in ("interval", "cluster"):
            parts += [f"every={self.every:g}s", f"D={self.duration:g}s", self.align]
        if self.workload in ("interval", "burst", "cluster"):
            parts.append(f"W={self.work_ms:g}ms")
        if self.workload == "idle":
            parts.append(f"window={self.duration:g}s")
        if self.processes > 1:
            parts.append(f"procs={self.processes}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunSpec:
        return cls(**data)  # type: ignore[arg-type]


def first_fire_ms(spec: RunSpec, index: int) -> int:
    """The first intended fire time of job ``index``, in epoch milliseconds.

    Whole milliseconds keep every system's arithmetic exact (pyscheduler stores
    milliseconds, APScheduler and ``schedule`` microseconds).
    """
    if spec.t0_ms is None:
        raise ValueError("the runner sets t0_ms before a timed run")
    if spec.align == "spread":
        return spec.t0_ms + index * round(spec.every * 1000) // spec.jobs
    return spec.t0_ms


def _per_system(systems: tuple[str, ...], workload: str,
                combos: list[dict[str, object]]) -> list[RunSpec]:
    return [RunSpec(system=system, workload=workload, **combo)  # type: ignore[arg-type]
            for combo in combos for system in systems]


def quick_plan() -> list[RunSpec]:
    """About 1.5 minutes: one run per system and workload, smaller N and windows."""
    return (
        _per_system(SYSTEMS, "interval",
                    [{"jobs": 1000, "every": 1.0, "duration": 4.0, "align": "aligned"}])
        + _per_system(SYSTEMS, "burst", [{"jobs": 1000}])
        + _per_system(SYSTEMS, "registration", [{"jobs": 10_000}])
        + _per_system(SYSTEMS, "idle", [{"jobs": 10_000, "duration": 5.0, "warmup": 1.0}])
        + [RunSpec(CLUSTER_SYSTEM, "cluster", jobs=2000, every=1.0, duration=5.0,
                   align="spread", processes=3)]
    )


def full_plan() -> list[RunSpec]:
    """About 15 minutes: the whole grid of the issue."""
    window = {"every": 1.0, "duration": 10.0}
    return (
        _per_system(SYSTEMS, "interval", [
            {"jobs": 100, "align": "aligned", **window},
            {"jobs": 100, "align": "spread", "work_ms": 10.0, **window},
            {"jobs": 1000, "align": "aligned", **window},
            {"jobs": 1000, "align": "spread", **window},
            {"jobs": 1000, "align": "spread", "work_ms": 5.0, **window},  # pool half busy
            {"jobs": 1000, "align": "spread", "work_ms": 10.0, **window},  # pool all busy
            {"jobs": 10_000, "align": "aligned", **window},
            {"jobs": 10_000, "align": "spread", **window},
        ])
        + _per_system(SYSTEMS, "burst", [
            {"jobs": 1000},
            {"jobs": 1000, "work_ms": 10.0},
            {"jobs": 10_000},
        ])
        + _per_system(SYSTEMS, "registration", [{"jobs": 100_000}])
        + _per_system(SYSTEMS, "idle", [{"jobs": 10_000, "duration": 20.0, "warmup": 2.0}])
        + [RunSpec(CLUSTER_SYSTEM, "cluster", jobs=10_000, every=1.0, duration=20.0,
                   align="spread", processes=3)]
    )
