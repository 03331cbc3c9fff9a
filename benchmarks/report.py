"""The markdown summary: one table per workload, one row per run, skipped runs included."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from .plan import WORKLOADS

__all__ = ["markdown"]

Line = dict[str, object]
Column = tuple[str, Callable[[Line], str]]


def _num(value: object, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _get(key: str, digits: int = 2) -> Callable[[Line], str]:
    return lambda line: _num(line.get(key), digits)


def _param(key: str, digits: int = 0) -> Callable[[Line], str]:
    def cell(line: Line) -> str:
        params = line.get("params")
        return _num(params.get(key), digits) if isinstance(params, dict) else "–"

    return cell


def _late(which: str) -> Callable[[Line], str]:
    def cell(line: Line) -> str:
        lateness = line.get("lateness_ms")
        return _num(lateness.get(which), 1) if isinstance(lateness, dict) else "–"

    return cell


def _note(line: Line) -> str:
    status = line.get("status")
    if status == "skipped":
        return f"skipped: {line.get('reason')}"
    if status == "error":
        return f"**error**: {str(line.get('error', '')).splitlines()[-1][:120]}"
    notes = []
    margin = line.get("ready_margin_s")
    if isinstance(margin, float) and margin < 0:
        notes.append(f"setup overran first fire by {-margin:.2f} s")
    if line.get("early"):
        notes.append(f"{line['early']} runs early")
    claimed = line.get("claimed_duplicates")
    if line.get("duplicates") or claimed:
        notes.append(f"**duplicates**: {line.get('duplicates')} by start times, "
                     f"{'n/a' if claimed is None else claimed} by claimed occurrence")
    redis_cpu = line.get("redis_cpu_s")
    if isinstance(redis_cpu, float):
        notes.append(f"redis-server CPU {redis_cpu:.2f} s (whole run)")
    share = line.get("share")
    if isinstance(share, list):
        notes.append("per process: " + " / ".join(f"{n:,}" for n in share))
    return "; ".join(notes)


_SYSTEM: Column = ("system", lambda line: str(line.get("system")))
_RUN: list[Column] = [
    ("expected", _get("expected")), ("executed", _get("executed")), ("dup", _get("duplicates")),
    ("late p50 ms", _late("p50")), ("late p99 ms", _late("p99")), ("late max ms", _late("max")),
]
_COLUMNS: dict[str, list[Column]] = {
    "interval": [_SYSTEM, ("N", _param("jobs")), ("fire times", _param("align")),
                 ("work ms", _param("work_ms")), *_RUN, ("CPU s", _get("cpu_s")),
                 ("peak RSS MB", _get("rss_peak_mb", 1))],
    "burst": [_SYSTEM, ("N", _param("jobs")), ("work ms", _param("work_ms")), *_RUN,
              ("all started s", _get("makespan_s")), ("CPU s", _get("cpu_s")),
              ("peak RSS MB", _get("rss_peak_mb", 1))],
    "registration": [_SYSTEM, ("N", _param("jobs")), ("register s", _get("register_s")),
                     ("register CPU s", _get("cpu_s")), ("RSS growth MB", _get("rss_growth_mb", 1)),
                     ("peak RSS MB", _get("rss_peak_mb", 1)), ("start() s", _get("start_s"))],
    "idle": [_SYSTEM, ("N", _param("jobs")), ("window s", _param("duration")),
             ("CPU s", _get("cpu_s", 3)), ("CPU s/min", _get("cpu_s_per_min", 3)),
             ("peak RSS MB", _get("rss_peak_mb", 1))],
    "cluster": [_SYSTEM, ("processes", _param("processes")), ("N", _param("jobs")), *_RUN,
                ("CPU s (sum)", _get("cpu_s")), ("peak RSS MB (max)", _get("rss_peak_mb", 1))],
}

_TITLES = {
    "interval": "Interval jobs (every S s, for D s)",
    "burst": "Burst: N one-time jobs due at the same instant",
    "registration": "Registration of N jobs (not started)",
    "idle": "Idle cost: jobs whose next run is an hour away",
    "cluster": "Redis cluster share: 3 pyscheduler processes on one Redis",
}


def markdown(lines: Sequence[Line], header: Optional[str] = None) -> str:
    """The tables of every workload present in ``lines``."""
    out = [header, ""] if header else []
    for workload in WORKLOADS:
        rows = [line for line in lines if line.get("workload") == workload]
        if not rows:
            continue
        columns = _COLUMNS[workload] + [("notes", _note)]
        params = rows[0].get("params")
        extra = ""
        if workload in ("interval", "cluster") and isinstance(params, dict):
            extra = f" — S={params.get('every'):g} s, D={params.get('duration'):g} s"
        out += [f"### {_TITLES[workload]}{extra}", "",
                "| " + " | ".join(name for name, _ in columns) + " |",
                "|" + "|".join("---" for _ in columns) + "|"]
        out += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
        out.append("")
    return "\n".join(out)
