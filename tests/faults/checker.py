"""The history checker: what must hold after every fault scenario.

It reads the merged instance histories (see :mod:`tests.faults.instance`), the sink's log
(:mod:`tests.faults.sink`) and a :class:`Scenario`: the job specs, the lease settings, the
window whose occurrences must run, and the faults the test injected, each with when and on
which instances. :func:`check` returns one line per violation, so a failing scenario names
every broken rule at once. The rules:

- ``accepted-once``: at most one accepted completion (sink commit) per occurrence, unless a
  fault explains the earlier one (its holder committed, then died or froze before recording
  it, and lost the lease: at-least-once).
- ``duplicate``: a second start of an occurrence is a retry after a failed attempt, or is
  explained by a fault that outlasted the lease (or lost data) while the earlier run held it.
  Without faults this is "exactly one start per occurrence".
- ``stale-begin``: a run whose fence the sink had already seen surpassed at its start ran on
  an instance such a fault explains.
- ``coverage``: every occurrence due in the window started at least once, unless it fell in a
  declared gap (the group was down, Redis lost the data, the misfire policy skipped it) or
  while an earlier run of its job still held it (an orphan waits for its lease to run out):
  those coalesce, so a ``coalesce`` gap, and each such wait, has at most one start per job.
- ``fence``: fences strictly increase per job in claim order (the backend's ``claimed_at``),
  and no two runs share one.
- ``overlap``: runs of one job do not overlap in time, unless a fault explains it.
- ``early``: no start before its ``scheduled_at`` (real wall time; the instances' skewed
  clocks don't count, the backend's does).
- ``lag``: the p99 start lag of undisturbed occurrences is under the scenario's bound.
- ``deadline``: a run stops holding its lease (cancelled, finished or handed back) no later
  than its last successful claim or refresh *send* + ``lock_ttl`` (+ slack), i.e. before
  the lease can expire in Redis; a frozen process (SIGSTOP, a GIL-holding C call) gets until
  it thaws.
- ``warning``: a fault-free scenario logs no warning or error at all; otherwise "lease lost"
  and "stale completion" appear only on instances a lease-outlasting fault touched.
- ``leftover``: after a graceful stop of every instance no lease key and no running job is
  left in Redis, and no instance has a pyscheduler thread or an unfinished handler left.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .spec import JobSpec

__all__ = ["Fault", "Gap", "Run", "Scenario", "check", "load_history", "runs_of"]

INF = math.inf
#: Warnings that only a fault outlasting the lease may explain.
LEASE_WARNINGS = ("lease lost", "stale completion")


@dataclass(frozen=True)
class Fault:
    """A fault the test injected.

    :ivar start/end: monotonic times (``end`` = ``start`` for an instant: kill, restart).
    :ivar instances: the instances it touched; empty: all of them (a Redis-side fault).
    :ivar explains: it outlasted the lease (or lost data), so takeovers, duplicate starts,
        overlaps and lease warnings on its instances are expected.
    :ivar freezes: the process could not run at all meanwhile (SIGSTOP, the GIL held).
    :ivar kills: the instances' processes died at ``start`` (kill -9).
    :ivar jobs: the jobs it touched; empty: all of them.
    """

    kind: str
    start: float
    end: float
    wall: float = 0.0
    wall_end: float = 0.0
    instances: tuple[str, ...] = ()
    explains: bool = True
    freezes: bool = False
    kills: bool = False
    jobs: tuple[str, ...] = ()

    def touches(self, instance: str, job: Optional[str] = None) -> bool:
        return ((not self.instances or instance in self.instances)
                and (job is None or not self.jobs or job in self.jobs))


@dataclass(frozen=True)
class Gap:
    """Wall-clock span whose occurrences may be missing (``jobs`` empty: every job)."""

    start: float
    end: float
    jobs: tuple[str, ...] = ()
    coalesce: bool = False  # ... and at most one of them may run, per job

    def covers(self, job: str, scheduled_ms: int, slack: float = 0.0) -> bool:
        return (not self.jobs or job in self.jobs) and \
            self.start <= scheduled_ms / 1000 <= self.end + slack


@dataclass
class Scenario:
    """What the test set up and did, for :func:`check`."""

    jobs: Sequence[JobSpec]
    lock_ttl: float
    window: tuple[float, float]  # wall seconds: occurrences scheduled in it must run
    faults: Sequence[Fault] = ()
    gaps: Sequence[Gap] = ()
    graceful: bool = True  # every instance was stopped gracefully at the end
    leftover_leases: Sequence[str] = ()  # lease keys found in Redis after the stop
    running_jobs: Sequence[str] = ()  # jobs stored as running after the stop
    lag_bound: float = 1.0
    #: the instances' takeover_delay: a faulty instance's jobs wait that long for another
    takeover_delay: float = 1.0
    cancel_slack: float = 0.75
    early_tolerance: float = 0.01
    #: how long after a handler returns (or a gap ends) an occurrence may still be missed:
    #: the outcome, or the first claim after the gap, lands a little later
    record_slack: float = 0.25
    allowed_logs: Sequence[str] = ()  # substrings of warnings expected in this scenario


@dataclass
class Run:
    """One handler run, from its ``start`` line (and ``finish``, if it has one)."""

    instance: str
    job: str
    scheduled_ms: int
    attempt: int
    kind: str
    fence: int
    start: float  # monotonic
    wall: float
    end: Optional[float] = None  # monotonic, when the handler returned
    outcome: Optional[str] = None
    begin: Optional[bool] = None  # the sink accepted its begin write

    @property
    def occurrence(self) -> tuple[str, int]:
        return self.job, self.scheduled_ms

    def __str__(self) -> str:
        return (f"{self.job}@{self.scheduled_ms} attempt {self.attempt} ({self.kind}, fence "
                f"{self.fence}) on {self.instance}")


def load_history(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every complete line of the instances' history files, in monotonic order."""
    events = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.endswith("}"):  # a process killed mid-write leaves half a line
                events.append(json.loads(line))
    events.sort(key=lambda e: e["mono"])
    return events


def runs_of(events: Sequence[dict[str, Any]]) -> list[Run]:
    runs: dict[tuple[str, str, int], Run] = {}
    for e in events:
        key = (e.get("instance", ""), e.get("job", ""), e.get("fence", 0))
        if e["event"] == "start":
            runs[key] = Run(e["instance"], e["job"], e["scheduled_ms"], e["attempt"],
                            e["kind"], e["fence"], e["mono"], e["wall"])
        elif e["event"] == "finish" and key in runs:
            runs[key].end, runs[key].outcome = e["mono"], e["outcome"]
            runs[key].begin = e.get("begin")
    return sorted(runs.values(), key=lambda r: r.start)


def check(events: Sequence[dict[str, Any]], sink: Sequence[dict[str, Any]],
          scenario: Scenario) -> list[str]:
    """Every violation of the rules above, one line each; ``[]`` when the history is good."""
    runs = runs_of(events)
    return (_accepted_once(runs, events, sink, scenario) + _duplicates(runs, events, scenario)
            + _stale_begins(runs, sink, scenario) + _coverage(runs, events, scenario)
            + _fences(runs, events) + _overlaps(runs, events, scenario)
            + _early(runs, scenario) + _lag(runs, scenario)
            + _deadlines(runs, events, scenario) + _warnings(events, scenario)
            + _leftovers(runs, events, scenario))


# -- the rules -------------------------------------------------------------------------------


def _accepted_once(runs: Sequence[Run], events: Sequence[dict[str, Any]],
                   sink: Sequence[dict[str, Any]], scenario: Scenario) -> list[str]:
    """The sink rejects a commit once a higher fence began, so a second accepted completion
    means the first holder committed, then kept its lease until a takeover without recording
    its outcome: only a fault on it (or lost data) explains that."""
    accepted: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    for w in sink:
        if w["phase"] == "commit" and w["accepted"]:
            accepted[(w["job"], w["scheduled_ms"])].append((w["instance"], w["fence"]))
    ends = _holding_ends(runs, events, scenario)
    by_key = {(r.instance, r.job, r.fence): r for r in runs}
    found = []
    for (job, ms), writers in sorted(accepted.items()):
        for instance, fence in writers[:-1]:
            run = by_key.get((instance, job, fence))
            if run is None or not _explained(run, run.start, ends[id(run)], scenario):
                found.append(f"accepted-once: {job}@{ms} has {len(writers)} accepted "
                             f"completions (fences {[f for _, f in writers]}) and no fault "
                             f"explains the first by {instance}")
                break
    return found


def _duplicates(runs: Sequence[Run], events: Sequence[dict[str, Any]],
                scenario: Scenario) -> list[str]:
    ends = _holding_ends(runs, events, scenario)
    by_occurrence: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for run in runs:
        by_occurrence[run.occurrence].append(run)
    found = []
    for occurrence_runs in by_occurrence.values():
        occurrence_runs.sort(key=lambda r: r.fence)
        for i, run in enumerate(occurrence_runs[1:], 1):
            earlier = occurrence_runs[:i]
            if run.kind == "retry" and earlier[-1].outcome not in (None, "ok"):
                continue  # a retry of a failed attempt (the overlap rule checks its timing)
            if any(_explained(prev, prev.start, ends[id(prev)], scenario) for prev in earlier):
                continue
            found.append(f"duplicate: {run} started after {earlier[-1]} with no fault to "
                         "explain it")
    return found


def _stale_begins(runs: Sequence[Run], sink: Sequence[dict[str, Any]],
                  scenario: Scenario) -> list[str]:
    found = []
    rejected = {(w["instance"], w["job"], w["fence"]) for w in sink
                if w["phase"] == "begin" and not w["accepted"]}
    for run in runs:
        if (run.instance, run.job, run.fence) in rejected and not any(
                f.explains and f.touches(run.instance, run.job) for f in scenario.faults):
            found.append(f"stale-begin: {run} began after a higher fence of its job had "
                         "begun, on an instance no fault explains")
    return found


def _coverage(runs: Sequence[Run], events: Sequence[dict[str, Any]],
              scenario: Scenario) -> list[str]:
    started: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        started[run.job].add(run.scheduled_ms)
    claimed = {(job, fence): at / 1000 for e in events if e["event"] == "claim"
               for job, _, fence, _, _, at in e["claims"]}
    # When a run's outcome was recorded: at the latest when the call returned (its event's
    # time), at the earliest when it was sent — far apart if the process froze in between.
    recorded: dict[tuple[str, int], float] = {}
    recorded_at_send: dict[tuple[str, int], float] = {}
    for e in events:
        if e["event"] in ("claim", "finish_call") and "error" not in e:
            for job, fence, _ in e.get("finished", ()):
                recorded.setdefault((job, fence), e["wall"])
                recorded_at_send.setdefault((job, fence), e["wall"] - (e["mono"] - e["sent"]))
    gaps = [*scenario.gaps, *_takeover_gaps(scenario)]
    busy = _busy_spans(runs, claimed, recorded)
    # For "it could not run, so its occurrences coalesce", only what surely held it counts.
    surely_busy = _busy_spans(runs, claimed, recorded_at_send)
    found = []
    start, end = scenario.window
    for spec in scenario.jobs:
        due = spec.occurrences_ms(start, end)
        for job in spec.names():
            missing = [ms for ms in due if ms not in started[job]
                       and not any(g.covers(job, ms, scenario.record_slack) for g in gaps)
                       and not any(a < ms / 1000 <= b + scenario.record_slack
                                   for a, b, _ in busy[job])]
            if missing:
                found.append(f"coverage: {job} never started {len(missing)} occurrence(s) "
                             f"due in the window: {missing[:5]}")
            spans = [(g.start, g.end) for g in scenario.gaps if g.coalesce
                     and (not g.jobs or job in g.jobs)]
            spans += [(a, b) for a, b, _ in surely_busy[job]]
            for a, b in spans:
                inside = sorted(ms for ms in started[job] if a < ms / 1000 < b)
                if len(inside) > 1:
                    found.append(f"coverage: {job} ran {len(inside)} of the occurrences due "
                                 f"while it could not run ({a:.3f}-{b:.3f}): they should "
                                 f"coalesce into one: {inside}")
    return found


def _takeover_gaps(scenario: Scenario) -> list[Gap]:
    """An instance that a fault stops from claiming (frozen, killed, cut off, slowed) owns
    some of the jobs: their occurrences wait for it, or for another instance to take them
    over once ``takeover_delay`` overdue (found by a peek at most a takeover delay later),
    and those due meanwhile may coalesce. Which jobs it owned the checker does not know, so
    any job's occurrence may be missing then."""
    delay = scenario.takeover_delay
    return [Gap(f.wall, max(f.wall_end, f.wall + delay) + delay) for f in scenario.faults
            if f.instances]


def _busy_spans(runs: Sequence[Run], claimed: dict[tuple[str, int], float],
                recorded: Optional[dict[tuple[str, int], float]] = None,
                ) -> dict[str, list[tuple[float, float, int]]]:
    """Per job, the wall-clock spans in which a run held it, as (from, to, occurrence): from
    its claim (Redis's ``claimed_at``: a frozen process logs its start late) or start to its
    end or, if its occurrence was run again (a higher fence), to that next start; and
    for a recovery, from its occurrence's time on (the orphan held the job until its lease
    ran out, whether or not its start made it to the history)."""
    by_occurrence: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for run in runs:
        by_occurrence[run.occurrence].append(run)
    spans: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for run in runs:
        later = [r.wall for r in by_occurrence[run.occurrence] if r.fence > run.fence]
        if later:
            until = min(later)
        else:
            until = INF if run.end is None else run.wall + (run.end - run.start)
            # The job stays running in Redis until the outcome is recorded (a process frozen
            # between its handler's return and that call holds it meanwhile).
            until = max(until, (recorded or {}).get((run.job, run.fence), until))
        since = min(run.wall, claimed.get((run.job, run.fence), run.wall))
        spans[run.job].append((since, until, run.scheduled_ms))
        if run.kind == "recovery":
            spans[run.job].append((run.scheduled_ms / 1000, run.wall, run.scheduled_ms))
    return spans


def _fences(runs: Sequence[Run], events: Sequence[dict[str, Any]]) -> list[str]:
    found = []
    claims: dict[str, dict[int, int]] = defaultdict(dict)  # job -> fence -> claimed_at
    for e in events:
        if e["event"] == "claim":
            for job, _, fence, _, _, claimed_at in e["claims"]:
                known = claims[job].get(fence)
                claims[job][fence] = claimed_at if known is None else min(known, claimed_at)
    for job, by_fence in sorted(claims.items()):
        ordered = sorted(by_fence.items(), key=lambda item: (item[1], item[0]))
        for (fence_a, at_a), (fence_b, at_b) in zip(ordered, ordered[1:]):
            if at_b > at_a and fence_b <= fence_a:
                found.append(f"fence: {job} was claimed with fence {fence_b} at {at_b} after "
                             f"fence {fence_a} at {at_a}")
    holders: dict[tuple[str, int], set[str]] = defaultdict(set)
    for run in runs:
        holders[(run.job, run.fence)].add(run.instance)
    found += [f"fence: {job} ran fence {fence} on several instances: {sorted(names)}"
              for (job, fence), names in sorted(holders.items()) if len(names) > 1]
    return found


def _overlaps(runs: Sequence[Run], events: Sequence[dict[str, Any]],
              scenario: Scenario) -> list[str]:
    kills = _kill_times(scenario)
    found = []
    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job].append(run)
    for job_runs in by_job.values():
        for i, b in enumerate(job_runs):
            for a in job_runs[:i]:
                a_end = a.end if a.end is not None else kills.get(a.instance, INF)
                if a.start <= b.start < a_end and not _explained(a, a.start, a_end, scenario) \
                        and not _explained(b, b.start, b.end or INF, scenario):
                    found.append(f"overlap: {b} started {b.start - a.start:.3f} s into {a}, "
                                 f"which ran until {_rel(a_end, a.start)}, and no fault "
                                 "explains it")
    return found


def _early(runs: Sequence[Run], scenario: Scenario) -> list[str]:
    return [f"early: {run} started {run.scheduled_ms / 1000 - run.wall:.3f} s before its "
            "scheduled time" for run in runs
            if run.wall < run.scheduled_ms / 1000 - scenario.early_tolerance]


def _lag(runs: Sequence[Run], scenario: Scenario) -> list[str]:
    margin_before, margin_after = scenario.lock_ttl + 0.5, scenario.lock_ttl + 2.0
    lags = sorted(run.wall - run.scheduled_ms / 1000 for run in runs
                  if run.kind == "regular" and run.attempt == 1
                  and not any(g.covers(run.job, run.scheduled_ms) for g in scenario.gaps)
                  and not any(f.wall - margin_before <= run.scheduled_ms / 1000
                              <= f.wall_end + margin_after for f in scenario.faults))
    if not lags:
        return []
    p99 = lags[math.ceil(0.99 * len(lags)) - 1]
    if p99 <= scenario.lag_bound:
        return []
    return [f"lag: p99 start lag {p99:.3f} s over {len(lags)} undisturbed starts is above "
            f"{scenario.lag_bound} s (max {lags[-1]:.3f} s)"]


def _deadlines(runs: Sequence[Run], events: Sequence[dict[str, Any]],
               scenario: Scenario) -> list[str]:
    ttl, slack = scenario.lock_ttl, scenario.cancel_slack
    claims: dict[tuple[str, str, int], tuple[float, float]] = {}
    refreshed: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for e in events:
        if e["event"] == "claim":
            for job, _, fence, _, _, _ in e["claims"]:
                claims.setdefault((e["instance"], job, fence), (e["sent"], e["done"]))
        elif e["event"] == "refresh" and "error" not in e:
            for job, fence, ok in e["leases"]:
                if ok:
                    refreshed[(e["instance"], job, fence)].append(e["sent"])
    ends = _holding_ends(runs, events, scenario, running=True)
    found = []
    for run in runs:
        key = (run.instance, run.job, run.fence)
        if key not in claims:
            continue
        sent, learnt = claims[key]
        stop = ends[id(run)]
        sends = sorted(s for s in refreshed[key] if s < stop)
        previous, known = sent, learnt
        for at in sends + [stop]:
            bound = max(previous + ttl, known) + slack
            for fault in scenario.faults:
                if fault.freezes and fault.touches(run.instance) and fault.start < at \
                        and fault.end > previous:
                    bound = max(bound, fault.end + slack)
            if at > bound:
                what = "stopped holding it" if at == stop else "refreshed it again"
                found.append(f"deadline: {run} {what} {at - previous:.3f} s after its last "
                             f"successful claim or refresh was sent (lock_ttl {ttl} s): "
                             f"{at - bound + slack:.3f} s after its lease could expire")
                break
            previous, known = at, at
    return found


def _warnings(events: Sequence[dict[str, Any]], scenario: Scenario) -> list[str]:
    found = []
    for e in events:
        if e["event"] != "log":
            continue
        msg = e["msg"]
        if any(allowed in msg for allowed in scenario.allowed_logs):
            continue
        if not scenario.faults:
            found.append(f"warning: {e['instance']} logged a {e['level']} in a fault-free "
                         f"scenario: {msg} {e.get('fields', {})}")
        elif any(w in msg for w in LEASE_WARNINGS) and not any(
                f.explains and f.touches(e["instance"]) and f.start - 1 <= e["mono"]
                <= f.end + scenario.lock_ttl + 10 for f in scenario.faults):
            found.append(f"warning: {e['instance']} logged {msg!r} {e.get('fields', {})} "
                         "where no fault outlasting the lease explains it")
    return found


def _leftovers(runs: Sequence[Run], events: Sequence[dict[str, Any]],
               scenario: Scenario) -> list[str]:
    if not scenario.graceful:
        return []
    found = [f"leftover: lease key {key} in Redis after every instance stopped"
             for key in scenario.leftover_leases]
    found += [f"leftover: {job} stored as running after every instance stopped"
              for job in scenario.running_jobs]
    killed = {name for f in scenario.faults if f.kills for name in f.instances}
    stopped = {e["instance"]: e for e in events if e["event"] == "stopped"}
    for instance in sorted({e["instance"] for e in events if e["event"] == "ready"} - killed):
        if instance not in stopped:
            found.append(f"leftover: {instance} never reported its graceful stop")
        elif stopped[instance]["threads"]:
            found.append(f"leftover: {instance} still had threads after stop(): "
                         f"{stopped[instance]['threads']}")
    found += [f"leftover: {run} never finished on its gracefully stopped instance"
              for run in runs if run.end is None and run.instance not in killed]
    return found


# -- helpers ---------------------------------------------------------------------------------


def _explained(run: Run, start: float, end: float, scenario: Scenario) -> bool:
    """Whether a fault that outlasted the lease touched ``run`` while it held its lease."""
    return any(f.explains and f.touches(run.instance, run.job)
               and f.start <= end and f.end >= start - scenario.lock_ttl
               for f in scenario.faults)


def _kill_times(scenario: Scenario) -> dict[str, float]:
    return {name: f.start for f in scenario.faults if f.kills for name in f.instances}


def _holding_ends(runs: Sequence[Run], events: Sequence[dict[str, Any]],
                  scenario: Scenario, *, running: bool = False) -> dict[int, float]:
    """By ``id(run)``: when each run let its lease go: declared lost, handed back, its
    process killed, or its outcome recorded (else: never). With ``running``, when it
    stopped *running* on it: also when its handler returned or its outcome was sent, even
    if that call failed (the lease is no longer refreshed, and what it guards is over)."""
    marks: dict[tuple[str, str, int], float] = {}

    def mark(instance: str, job: Any, fence: Any, at: float) -> None:
        key = (instance, job, fence)
        marks[key] = min(marks.get(key, INF), at)

    for e in events:
        kind = e["event"]
        if kind == "log" and "lease lost" in e["msg"]:
            fields = e.get("fields", {})
            mark(e["instance"], fields.get("job"), fields.get("fence"), e["mono"])
        elif kind in ("claim", "finish_call") and (running or "error" not in e):
            for job, fence, accepted in e.get("finished", ()):
                # A result the backend dropped as stale released nothing: the lease ran out
                # (and another instance took over), whenever the call was sent.
                if running or accepted is not False:
                    mark(e["instance"], job, fence, e["sent"])
        elif kind == "interrupt":
            for job, fence, _ in e["leases"]:
                mark(e["instance"], job, fence, e["mono"])
    kills = _kill_times(scenario)
    ends = {}
    for run in runs:
        end = min(marks.get((run.instance, run.job, run.fence), INF),
                  kills.get(run.instance, INF))
        if running and run.end is not None:
            end = min(end, run.end)
        ends[id(run)] = end
    return ends


def _rel(at: float, origin: float) -> str:
    return "its process died" if at == INF else f"{at - origin:.3f} s"
