"""Scaling: what one occurrence costs as the group grows from 1 to N instances on one Redis.

For each N (default 1, 2, 4, 8) the runner starts a fresh redis-server (free loopback port,
no persistence) and N scheduler processes (:mod:`benchmarks.scaling_instance`), each
registering the same jobs: by default 300 interval jobs of 1 s whose first fires are spread
evenly over one second, i.e. 300 occurrences a second, for 10 s. Each handler only records
``(job, scheduled_at, fence, attempt, pid, start)``.

Over a measured window that leaves out a warm-up after the first fire and a cool-down before
the stop (1 s each; ``--quick``: 0.5 s), the runner samples Redis's ``INFO commandstats``
and ``INFO cpu`` and every instance's CPU time at both edges, and reports per executed
occurrence: script calls (``evalsha``/``eval``/``fcall`` and their ``_ro`` forms), all
commands, Redis CPU (``used_cpu_user + used_cpu_sys``), plus the client CPU of all instances,
and from the merged histories: executed, duplicates, missed and start lateness.

Where the host allows it (Linux, two CPUs or more), redis-server runs on a CPU of its own
(CPU 0) and the instances on the others, as Redis runs on a host of its own in production:
sharing CPUs with N client processes, Redis's own CPU per command grows with N (it is
preempted mid-script, its caches go cold), which is the host's doing, not the group's
(``--no-pin`` to share). Each group size runs ``--repeat`` times (full: 3; quick: 1), the
sizes taking turns, and the ratios compare the median of each size's runs, so that one noisy
run does not decide.

The target (met since jobs have owners): at 8 instances, script calls and Redis CPU per occurrence
within 1.25x of one instance, no duplicate, none missed.

``python -m benchmarks.scaling [--quick] [--instances 1,2,4,8] [--jobs 300] [--every 1]
[--duration 10] [--repeat 3] [--no-pin]``; see ``benchmarks/README.rst``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Optional

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import percentile
from benchmarks.redis_server import RedisServer, RedisUnavailableError
from benchmarks.scaling_instance import first_fire_ms

__all__ = [
    "Group",
    "Params",
    "Sample",
    "main",
    "make_parser",
    "measure",
    "medians",
    "ratios",
    "report",
    "run_group",
    "summarize",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: the Redis commands that run a script.
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")

#: the target at the largest group, relative to one instance.
TARGET_RATIO = 1.25

#: seconds an instance may take to import and connect, and to stop and write its history.
LOAD_TIMEOUT_SECONDS = 60.0
EXIT_TIMEOUT_SECONDS = 30.0

Line = dict[str, Any]


@dataclass(frozen=True)
class Params:
    """One run's parameters (every N of an invocation shares them)."""

    jobs: int = 300
    every: float = 1.0
    duration: float = 10.0
    warmup: float = 1.0
    cooldown: float = 1.0
    #: SchedulerConfig fields of every instance; the rest are the defaults.
    max_concurrent: int = 10
    #: redis-server on CPU 0 and the instances on the other CPUs (see the module docstring)
    pinned: bool = False

    @property
    def rate(self) -> float:
        """Occurrences due per second."""
        return self.jobs / self.every


@dataclass(frozen=True)
class Sample:
    """The counters read at one edge of the measured window."""

    at: float
    commands: dict[str, int]
    command_usec: dict[str, int]
    redis_cpu_s: float
    client_cpu_s: dict[int, float]
    #: the host's 1-minute load average (other work on the machine skews every figure)
    loadavg_1m: float


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description="Script calls, Redis CPU and client CPU per occurrence as 1 to N "
                    "pyscheduler instances share one Redis and the same jobs.")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of a few seconds a group: N=1,2, 100 jobs, 3 s "
                             "(explicit options still win)")
    parser.add_argument("--instances", type=_ints, default=None,
                        help="comma-separated group sizes (default: 1,2,4,8; quick: 1,2)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs every instance registers (default: 300; quick: 100)")
    parser.add_argument("--every", type=float, default=1.0,
                        help="their interval in seconds; occurrences a second = jobs / every "
                             "(default: %(default)s)")
    parser.add_argument("--rate", type=float, default=None,
                        help="occurrences a second instead of --jobs: jobs = rate * every")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds from the first fire to the stop (default: 10; quick: 3)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where scaling-<timestamp>.jsonl and scaling-latest.md go "
                             "(default: %(default)s)")
    parser.add_argument("--keep-history", type=Path, default=None, metavar="DIR",
                        help="keep each instance's history file under DIR")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of each group size, the sizes taking turns; the ratios "
                             "compare medians (default: 3; quick: 1)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let redis-server share the CPUs with the instances instead of "
                             "running on CPU 0 alone")
    return parser


def _can_pin() -> bool:
    """Whether redis-server can have a CPU of its own with one left for the instances."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def _pin(pid: int, server: bool) -> None:
    """Put ``pid`` on the first CPU this process may use (the server) or on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(pid, set(cpus[:1] if server else cpus[1:]))


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give one or more group sizes of at least 1")
    return values


def _params(args: argparse.Namespace) -> tuple[Params, list[int]]:
    jobs = args.jobs if args.jobs is not None else (100 if args.quick else 300)
    if args.rate is not None:
        jobs = max(1, round(args.rate * args.every))
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    edge = 0.5 if args.quick else 1.0
    if jobs < 1 or args.every <= 0:
        raise SystemExit("--jobs (or --rate * --every) must be at least 1 and --every above 0")
    params = Params(jobs=jobs, every=args.every, duration=duration, warmup=edge, cooldown=edge,
                    pinned=args.pin and _can_pin())
    if params.duration - params.warmup - params.cooldown < params.every:
        raise SystemExit(f"--duration {duration:g} leaves less than one interval between the "
                         f"warm-up and the cool-down ({edge:g} s each)")
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    sizes = args.instances or ([1, 2] if args.quick else [1, 2, 4, 8])
    return params, sizes * repeat


def main(argv: Optional[list[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    params, sizes = _params(args)
    try:
        with RedisServer.launch() as probe:
            redis_version = probe.version()
    except RedisUnavailableError as exc:
        print(f"scaling benchmark skipped: {exc}", file=sys.stderr)
        return 2
    host = {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True), "redis": redis_version}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    jsonl = args.results_dir / f"scaling-{stamp}.jsonl"
    print(f"{params.jobs} jobs every {params.every:g} s ({params.rate:g} occurrences/s) for "
          f"{params.duration:g} s, groups of {', '.join(map(str, sizes))}"
          f"{'; redis-server on CPU 0 alone' if params.pinned else ''}", file=sys.stderr)
    lines: list[Line] = []
    for size in sizes:
        print(f"[{size} instance{'s' if size > 1 else ''}]", file=sys.stderr, flush=True)
        line = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "benchmark": "scaling", "instances": size, "params": asdict(params),
                "host": host, **measure(size, params, args.keep_history)}
        lines.append(line)
        print(json.dumps(line), flush=True)
        with jsonl.open("a") as out:
            out.write(json.dumps(line) + "\n")
    text = report(lines, params, host, stamp)
    print()
    print(text)
    (args.results_dir / "scaling-latest.md").write_text(text)
    print(f"results: {jsonl} and {args.results_dir / 'scaling-latest.md'}", file=sys.stderr)
    return 1 if any(line["status"] != "ok" for line in lines) else 0


def measure(size: int, params: Params, keep: Optional[Path] = None) -> dict[str, Any]:
    """Run one group of ``size`` instances on a fresh redis-server; the line's fields."""
    with RedisServer.launch() as server, tempfile.TemporaryDirectory(
            prefix="pysched-scaling-") as tmp:
        if params.pinned:
            _pin(server.process.pid, server=True)
        folder = Path(tmp)
        if keep is not None:
            folder = keep / f"n{size}"
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("history-*.jsonl"):
                old.unlink()
        try:
            group = run_group(size, params, server, folder)
        except GroupError as exc:
            return {"status": "error", "error": str(exc)}
        rows = []
        for path in sorted(folder.glob("history-*.jsonl")):
            rows += [json.loads(text) for text in path.read_text().splitlines() if text]
    return {"status": "ok", **summarize(params, group, rows)}


class GroupError(RuntimeError):
    """An instance failed: it exited, said something unexpected or took too long."""


@dataclass
class Group:
    """What :func:`run_group` saw: the edge samples, and each instance's last words."""

    t0_ms: int
    ready_margin_s: float
    before: Sample
    after: Sample
    pids: list[int]
    reports: list[dict[str, Any]]


def run_group(size: int, params: Params, server: RedisServer, folder: Path) -> Group:
    """Start ``size`` instances, sample the window's edges, wait for them to finish."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    common = {"host": server.host, "port": server.port, "jobs": params.jobs,
              "every": params.every, "duration": params.duration,
              "key_prefix": f"scaling-{uuid.uuid4().hex[:8]}",
              "scheduler": {"max_concurrent": params.max_concurrent}}
    procs: list[subprocess.Popen[str]] = []
    errs: list[IO[bytes]] = []
    try:
        for member in range(size):
            stderr_file = (folder / f"stderr-{member}.txt").open("w+b")
            errs.append(stderr_file)
            config = dict(common, history=str(folder / f"history-{member}.jsonl"))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.scaling_instance", json.dumps(config)],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr_file, text=True, bufsize=1))
            if params.pinned:
                _pin(procs[-1].pid, server=False)
        outputs = [_Lines(proc, err) for proc, err in zip(procs, errs)]
        for output in outputs:
            output.expect("loaded", LOAD_TIMEOUT_SECONDS)
        # Registration and start() of every instance at once, on the same CPUs.
        t0_ms = math.ceil((time.time() + 1.0 + 0.15 * size) * 1000)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{t0_ms}\n")
            proc.stdin.flush()
        t0 = t0_ms / 1000
        ready = [float(output.expect("ready", LOAD_TIMEOUT_SECONDS)) for output in outputs]
        pids = [proc.pid for proc in procs]
        before = _sample(server, pids, t0 + params.warmup)
        after = _sample(server, pids, t0 + params.duration - params.cooldown)
        reports = [json.loads(output.expect("done", params.cooldown + EXIT_TIMEOUT_SECONDS))
                   for output in outputs]
        for proc in procs:
            proc.wait(timeout=EXIT_TIMEOUT_SECONDS)
        return Group(t0_ms, round(t0 - max(ready), 3), before, after, pids, reports)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for err in errs:
            err.close()


class _Lines:
    """An instance's stdout, read line by line on a thread so that waits can time out."""

    def __init__(self, proc: subprocess.Popen[str], err: IO[bytes]) -> None:
        self.proc, self.err = proc, err
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put("")  # end of output

    def expect(self, word: str, timeout: float) -> str:
        """The rest of the next line, which must start with ``word``.

        :raises GroupError: another line, the end of output, or none within ``timeout``.
        """
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if line.startswith(word):
            return line[len(word):].strip()
        self.err.seek(0)
        stderr = self.err.read().decode(errors="replace").strip()
        status = "running" if self.proc.poll() is None else f"exit {self.proc.returncode}"
        raise GroupError(f"instance {self.proc.pid} ({status}) said {line.strip()!r} instead "
                         f"of {word!r}: {stderr[-2000:] or '(no stderr)'}")


def _sample(server: RedisServer, pids: list[int], at: float) -> Sample:
    while (left := at - time.time()) > 0:
        time.sleep(min(left, 0.5))
    client_cpu = {pid: _process_cpu_seconds(pid) for pid in pids}
    stats = server.client.info("commandstats")
    cpu = server.client.info("cpu")
    commands, usec = {}, {}
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        commands[name] = int(value["calls"])
        usec[name] = int(value["usec"])
    return Sample(at=time.time(), commands=commands, command_usec=usec,
                  redis_cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
                  client_cpu_s=client_cpu, loadavg_1m=os.getloadavg()[0])


def _process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (psutil, else ``/proc/<pid>/stat``)."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/stat") as stat:
            # the fields after the ")" that closes the command name: utime, stime are 12, 13
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def summarize(params: Params, group: Group, rows: list[list[Any]]) -> dict[str, Any]:
    """The line's figures, from the edge samples and the merged histories.

    Costs are counter deltas between the window's edges divided by the occurrences whose
    first start fell between them. Executed and missed are about the occurrences intended in
    ``[t0 + warmup, t0 + duration - cooldown)``, wherever in the run they started; a
    duplicate is any start of a (job, scheduled_at) beyond its first, anywhere in the run.
    """
    before, after = group.before, group.after
    first: dict[tuple[str, int], float] = {}
    starts: Counter[tuple[str, int]] = Counter()
    by_pid: Counter[int] = Counter()
    fences: Counter[tuple[str, int]] = Counter()
    for job, scheduled_ms, fence, _attempt, pid, started in rows:
        key = (job, int(scheduled_ms))
        starts[key] += 1
        fences[(job, int(fence))] += 1
        by_pid[int(pid)] += 1
        first[key] = min(started, first.get(key, math.inf))
    in_window = sum(1 for started in first.values() if before.at <= started < after.at)

    low = group.t0_ms + params.warmup * 1000
    high = group.t0_ms + (params.duration - params.cooldown) * 1000
    every_ms = params.every * 1000
    expected: set[tuple[str, int]] = set()
    for index in range(params.jobs):
        fire = first_fire_ms(group.t0_ms, index, params.jobs, params.every)
        k = max(0, math.ceil((low - fire) / every_ms))
        while (intended := round(fire + k * every_ms)) < high:
            expected.add((f"job-{index}", intended))
            k += 1
    executed = expected & first.keys()
    lateness = sorted(first[key] - key[1] / 1000 for key in executed)

    per = max(in_window, 1)
    calls = _delta(before.commands, after.commands, SCRIPT_COMMANDS)
    commands = _delta(before.commands, after.commands)
    script_usec = _delta(before.command_usec, after.command_usec, SCRIPT_COMMANDS)
    redis_cpu_s = after.redis_cpu_s - before.redis_cpu_s
    client_cpu_s = sum(after.client_cpu_s[pid] - before.client_cpu_s[pid] for pid in group.pids)
    calls_by_name: Counter[str] = Counter()
    for reported in group.reports:
        calls_by_name.update(reported.get("calls", {}))
    total_starts = sum(starts.values())
    return {
        "t0_ms": group.t0_ms,
        "ready_margin_s": group.ready_margin_s,
        "window_s": round(after.at - before.at, 3),
        "occurrences_in_window": in_window,
        "script_calls": calls,
        "script_calls_per_occurrence": round(calls / per, 3),
        "commands": commands,
        "commands_per_occurrence": round(commands / per, 3),
        "script_usec_per_occurrence": round(script_usec / per, 1),
        "redis_cpu_s": round(redis_cpu_s, 3),
        "redis_cpu_us_per_occurrence": round(redis_cpu_s * 1e6 / per, 1),
        "client_cpu_s": round(client_cpu_s, 3),
        "client_cpu_us_per_occurrence": round(client_cpu_s * 1e6 / per, 1),
        "expected": len(expected),
        "executed": len(executed),
        "missed": len(expected) - len(executed),
        "duplicates": total_starts - len(starts),
        "fence_reused": sum(n - 1 for n in fences.values()),
        "off_schedule": sum(1 for job, ms in starts if not _on_schedule(params, group, job, ms)),
        "starts": total_starts,
        "lateness_ms": {name: None if value is None else round(value * 1000, 2)
                        for name, value in (("p50", percentile(lateness, 50)),
                                            ("p99", percentile(lateness, 99)),
                                            ("max", lateness[-1] if lateness else None))},
        "starts_per_instance": [by_pid.get(pid, 0) for pid in group.pids],
        "loadavg_1m": after.loadavg_1m,
        "backend_calls": dict(sorted(calls_by_name.items())),
        "redis_commands_in_window": _deltas(before.commands, after.commands),
        "redis_usec_in_window": _deltas(before.command_usec, after.command_usec),
        "still_running_at_stop": sum(int(r.get("still_running", 0)) for r in group.reports),
    }


def _delta(before: dict[str, int], after: dict[str, int],
           names: Optional[tuple[str, ...]] = None) -> int:
    """How much the counters of ``names`` (default: all but our own ``info``) grew."""
    return sum(after.get(name, 0) - before.get(name, 0) for name in set(before) | set(after)
               if (name in names if names is not None else name != "info"))


def _deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Each counter's growth, those that grew only, largest first."""
    grown = {name: after[name] - before.get(name, 0) for name in after}
    return dict(sorted(((name, n) for name, n in grown.items() if n), key=lambda item: -item[1]))


def _on_schedule(params: Params, group: Group, job: str, scheduled_ms: int) -> bool:
    """Whether ``scheduled_ms`` is one of ``job``'s intended fire times."""
    fire = first_fire_ms(group.t0_ms, int(job.removeprefix("job-")), params.jobs, params.every)
    k = round((scheduled_ms - fire) / (params.every * 1000))
    return k >= 0 and round(fire + k * params.every * 1000) == scheduled_ms


#: the breakdown table's columns: counter name (see scaling_instance.count_calls), heading.
_BREAKDOWN = {
    "claim": "claim calls", "finish": "finish calls", "refresh": "refresh calls",
    "claim_requests": "claims asked", "claim_refused": "refused", "claim_won": "won",
    "outcomes": "results",
}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def report(lines: list[Line], params: Params, host: dict[str, Any], stamp: str) -> str:
    """The markdown summary: the table, the per-script breakdown, the ratios and the target."""
    out = [f"## pyscheduler scaling, {stamp}", "",
           f"{params.jobs} interval jobs every {params.every:g} s, spread "
           f"({params.rate:g} occurrences/s), registered by every instance, for "
           f"{params.duration:g} s; measured window leaves out {params.warmup:g} s after the "
           f"first fire and {params.cooldown:g} s before the stop"
           f"{'; redis-server on a CPU of its own' if params.pinned else ''}. Python "
           f"{host['python']}, {host['cpus']} CPUs, {host['platform']}, redis-server "
           f"{host['redis']}.", "",
           "| instances | script calls / occurrence | commands / occurrence | "
           "Redis CPU µs / occurrence | client CPU s (all) | executed | duplicates | missed "
           "| p50 lateness ms | p99 lateness ms |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    lines = sorted(lines, key=lambda line: int(line["instances"]))  # a size's runs together
    ok = [line for line in lines if line["status"] == "ok"]
    for line in lines:
        if line["status"] != "ok":
            out.append(f"| {line['instances']} | **error**: "
                       f"{str(line.get('error', '')).splitlines()[0][:150]} |||||||||")
            continue
        late = line["lateness_ms"]
        out.append(
            f"| {line['instances']} | {_fmt(line['script_calls_per_occurrence'])} "
            f"| {_fmt(line['commands_per_occurrence'])} "
            f"| {_fmt(line['redis_cpu_us_per_occurrence'], 0)} | {_fmt(line['client_cpu_s'])} "
            f"| {_fmt(line['executed'])} / {_fmt(line['expected'])} | {_fmt(line['duplicates'])} "
            f"| {_fmt(line['missed'])} | {_fmt(late['p50'], 1)} | {_fmt(late['p99'], 1)} |")
    columns = [name for name in _BREAKDOWN if any(name in line["backend_calls"] for line in ok)]
    if columns:
        out += ["", "Per occurrence, over the whole run (counted in the instances, divided by "
                "all starts): script calls by script, and the occurrences the claims asked for "
                "and were refused, and the results recorded:", "",
                "| instances | " + " | ".join(_BREAKDOWN[name] for name in columns) + " |",
                "|---|" + "---|" * len(columns)]
        for line in ok:
            per = max(line["starts"], 1)
            out.append(f"| {line['instances']} | " + " | ".join(
                _fmt(line["backend_calls"].get(name, 0) / per) for name in columns) + " |")
    for line in ok:
        notes = [text for value, text in (
            (line["ready_margin_s"] < 0, f"setup overran the first fire by "
                                         f"{-line['ready_margin_s']:.2f} s"),
            (line["off_schedule"], f"{line['off_schedule']} starts not at a fire time"),
            (line["fence_reused"], f"{line['fence_reused']} fences given twice"),
            (line["still_running_at_stop"], f"{line['still_running_at_stop']} runs left at "
                                            f"stop")) if value]
        if notes:
            out.append(f"\nN={line['instances']}: " + "; ".join(notes) + ".")
    # A group of 8 alone keeps the load near 1-1.5 (its processes mostly sleep).
    busy = [line for line in ok if line["loadavg_1m"] > line["host"]["cpus"]]
    if busy:
        out += ["", "**The host was busy**: the 1-minute load average exceeded the CPU count "
                "at the end of " + ", ".join(
                    f"N={line['instances']} ({line['loadavg_1m']:.1f})" for line in busy)
                + "; other work skews every figure of those groups "
                  "(see benchmarks/README.rst)."]
    out += ["", *_verdict(ok)]
    return "\n".join(out) + "\n"


def ratios(line: Line, base: Line) -> dict[str, float]:
    """Script calls and Redis CPU per occurrence of ``line`` relative to ``base`` (N=1)."""
    return {name: round(line[key] / max(base[key], 1e-9), 2) for name, key in (
        ("script_calls", "script_calls_per_occurrence"),
        ("redis_cpu", "redis_cpu_us_per_occurrence"))}


def medians(ok: list[Line]) -> dict[int, Line]:
    """Per group size, its runs in one: the median of each per-occurrence cost, and the
    duplicates and missed occurrences of all its runs added up."""
    sizes: dict[int, list[Line]] = {}
    for line in ok:
        sizes.setdefault(int(line["instances"]), []).append(line)
    return {size: {"instances": size, "runs": len(runs),
                   **{key: statistics.median(run[key] for run in runs)
                      for key in ("script_calls_per_occurrence", "redis_cpu_us_per_occurrence")},
                   "duplicates": sum(run["duplicates"] for run in runs),
                   "missed": sum(run["missed"] for run in runs)}
            for size, runs in sorted(sizes.items())}


def _verdict(ok: list[Line]) -> list[str]:
    merged = medians(ok)
    base = merged.get(1)
    if base is None:
        return ["No run of 1 instance: no ratios."]
    runs = {line["runs"] for line in merged.values()}
    out = [f"Medians of {'/'.join(map(str, sorted(runs)))} runs per size:"] \
        if max(runs) > 1 else []
    for line in merged.values():
        if line is not base:
            found = line["ratio_vs_1"] = ratios(line, base)
            out.append(f"- {line['instances']} instances vs 1: script calls "
                       f"x{found['script_calls']:.2f}, Redis CPU x{found['redis_cpu']:.2f} "
                       f"per occurrence")
    top = merged[max(merged)]
    if top is base:
        return out
    found = top["ratio_vs_1"]
    checks = [("script calls", found["script_calls"] <= TARGET_RATIO),
              ("Redis CPU", found["redis_cpu"] <= TARGET_RATIO),
              ("no duplicates", top["duplicates"] == 0), ("none missed", top["missed"] == 0)]
    met = all(passed for _, passed in checks)
    detail = ", ".join(f"{name} {'ok' if passed else 'NOT met'}" for name, passed in checks)
    out.append(f"- target at {top['instances']} instances (script calls and Redis CPU per "
               f"occurrence within x{TARGET_RATIO} of 1 instance, 0 duplicates, 0 missed): "
               f"{'**met**' if met else '**not met**'} ({detail})")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
