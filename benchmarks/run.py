"""The benchmark runner: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

It runs every selected (system, workload, parameters) of the quick or full plan in a fresh
worker process — three at once for the ``cluster`` workload — one after the other, so that
runs never compete for the CPU. For the ``*-redis`` systems it starts a private
redis-server on a free loopback port and flushes it before each run. Each run gives one
JSON line, printed and appended to ``benchmarks/results/<timestamp>.jsonl``; the markdown
tables at the end are printed and written to ``benchmarks/results/latest.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import summarize
from benchmarks.plan import (
    CLUSTER_SYSTEM,
    SYSTEMS,
    WORKLOADS,
    RunSpec,
    full_plan,
    quick_plan,
)
from benchmarks.redis_server import RedisServer, RedisUnavailableError
from benchmarks.report import markdown
from benchmarks.workloads import BURST_TIMEOUT_SECONDS

__all__ = ["main", "make_parser", "run_spec"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: seconds from spawning a worker to its first fire, before registration: interpreter start
#: and imports, with room to spare.
BASE_LEAD_SECONDS = 1.5

#: registration plus start() per job, generously, so that every system is ready before its
#: first fire (a run where it was not says so in its notes).
SETUP_SECONDS_PER_JOB = {
    "pyscheduler-memory": 150e-6,
    "pyscheduler-redis": 400e-6,
    "apscheduler-memory": 100e-6,
    "apscheduler-redis": 600e-6,
    "schedule": 40e-6,
}

Line = dict[str, object]
#: a worker's raw result, as parsed from its JSON file.
Raw = dict[str, Any]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare pyscheduler with APScheduler 3.x and schedule, each system in "
                    "its own process, on the same workloads.")
    parser.add_argument("--quick", action="store_true",
                        help="smaller N and windows, one run per system and workload (<2 min)")
    parser.add_argument("--systems", type=_names(SYSTEMS), default=list(SYSTEMS),
                        help=f"comma-separated subset of: {', '.join(SYSTEMS)}")
    parser.add_argument("--workloads", type=_names(WORKLOADS), default=list(WORKLOADS),
                        help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where the .jsonl and latest.md go (default: %(default)s)")
    parser.add_argument("--match", type=re.compile, default=None, metavar="REGEX",
                        help="only the runs whose 'system workload label' line (as --list "
                             "prints it) matches REGEX, e.g. 'burst.*N=10,000'")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    return parser


def _names(known: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = sorted(set(names) - set(known))
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
        return names

    return parse


def _run_line(spec: RunSpec) -> str:
    return f"{spec.system:20} {spec.workload:13} {spec.label}"


def main(argv: Optional[list[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    plan = [spec for spec in (quick_plan() if args.quick else full_plan())
            if spec.workload in args.workloads and spec.system in args.systems
            and (args.match is None or args.match.search(_run_line(spec)))]
    if not plan:
        print("nothing to run: no run matches --systems, --workloads and --match",
              file=sys.stderr)
        if "cluster" in args.workloads and CLUSTER_SYSTEM not in args.systems:
            print(f"(the cluster workload runs on {CLUSTER_SYSTEM} only)", file=sys.stderr)
        return 2
    if args.list:
        for spec in plan:
            print(_run_line(spec))
        return 0

    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    jsonl = args.results_dir / f"{stamp}.jsonl"
    started = time.monotonic()
    redis: Optional[RedisServer] = None
    redis_error = ""
    if any(spec.uses_redis for spec in plan):
        try:
            redis = RedisServer.launch()
        except RedisUnavailableError as exc:
            redis_error = str(exc)
    host = _host(redis)
    lines: list[Line] = []
    try:
        for number, spec in enumerate(plan, 1):
            print(f"[{number}/{len(plan)}] {spec.system} {spec.workload} {spec.label}",
                  file=sys.stderr, flush=True)
            if spec.uses_redis and redis is None:
                line = _line(spec, host, status="skipped", reason=redis_error)
            else:
                line = run_spec(spec, redis, host)
            lines.append(line)
            print(json.dumps(line), flush=True)
            with jsonl.open("a") as out:
                out.write(json.dumps(line) + "\n")
    finally:
        if redis is not None:
            redis.stop()
    header = (f"## pyscheduler benchmarks, {'quick' if args.quick else 'full'} mode, {stamp}\n\n"
              f"Python {host['python']}, {host['cpus']} CPUs, {host['platform']}; "
              f"redis-server {host['redis']}; "
              f"{time.monotonic() - started:.0f} s in all. Lateness is handler start minus the "
              f"intended fire time computed from the schedule; see benchmarks/README.rst.")
    table = markdown(lines, header)
    print()
    print(table)
    (args.results_dir / "latest.md").write_text(table)
    print(f"results: {jsonl} and {args.results_dir / 'latest.md'}", file=sys.stderr)
    return 1 if any(line["status"] == "error" for line in lines) else 0


def _host(redis: Optional[RedisServer]) -> dict[str, object]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "redis": redis.version() if redis is not None else None}


def _line(spec: RunSpec, host: dict[str, object], **fields: object) -> Line:
    params = {key: value for key, value in spec.to_dict().items()
              if key not in ("system", "workload")}
    return {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "system": spec.system, "workload": spec.workload, "label": spec.label,
            "params": params, "host": host, **fields}


def _lead_seconds(spec: RunSpec) -> float:
    per_job = SETUP_SECONDS_PER_JOB.get(spec.system, 100e-6)
    # the processes of a cluster run register at once, sharing the CPUs and the server
    return BASE_LEAD_SECONDS + spec.jobs * per_job * (1 + (spec.processes - 1) / 2)


def _timeout_seconds(spec: RunSpec) -> float:
    if spec.workload == "burst":
        return _lead_seconds(spec) + BURST_TIMEOUT_SECONDS + spec.jobs * spec.work_ms / 500 + 60
    if spec.workload in ("interval", "cluster"):
        return _lead_seconds(spec) + spec.duration + 60
    return 600.0


def run_spec(spec: RunSpec, redis: Optional[RedisServer], host: dict[str, object]) -> Line:
    """Run one spec in its worker process(es) and return its result line."""
    if spec.workload in ("interval", "burst", "cluster"):
        t0_ms = math.ceil((time.time() + _lead_seconds(spec)) * 1000)
        spec = dataclasses.replace(spec, t0_ms=t0_ms)
    options: dict[str, object] = {"key_prefix": f"bench-{uuid.uuid4().hex[:8]}"}
    redis_cpu = None
    if redis is not None and spec.uses_redis:
        redis.flush()
        options.update(redis_host=redis.host, redis_port=redis.port)
        redis_cpu = redis.cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="pysched-bench-") as tmp:
        results, error = _run_workers(spec, options, Path(tmp))
    redis_cpu_after = redis.cpu_seconds() if redis is not None else None
    if redis_cpu is not None and redis_cpu_after is not None:
        results = [dict(r, redis_cpu_s=redis_cpu_after - redis_cpu) for r in results]
    if error:
        return _line(spec, host, status="error", error=error)
    skipped = [str(r["skipped"]) for r in results if "skipped" in r]
    if skipped:
        return _line(spec, host, status="skipped", reason=skipped[0])
    return _line(spec, host, status="ok", **_merge(spec, results))


def _run_workers(spec: RunSpec, options: dict[str, object],
                 tmp: Path) -> tuple[list[Raw], str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    procs = []
    for member in range(spec.processes):
        out, err = tmp / f"result-{member}.json", tmp / f"stderr-{member}.txt"
        with err.open("wb") as err_file:
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", json.dumps(spec.to_dict()),
                 json.dumps(options), str(out)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err_file), out, err))
    deadline = time.monotonic() + _timeout_seconds(spec)
    results: list[Raw] = []
    errors: list[str] = []
    for proc, out, err in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            errors.append(f"worker {proc.pid} killed after {_timeout_seconds(spec):.0f} s")
            continue
        stderr = err.read_text(errors="replace").strip()
        if proc.returncode != 0 or not out.exists():
            errors.append(f"worker exited with status {proc.returncode}: "
                          f"{stderr[-2000:] or '(no output)'}")
            continue
        result = json.loads(out.read_text())
        if stderr:
            result["stderr"] = stderr[-2000:]
        results.append(result)
    return results, "\n".join(errors)


def _merge(spec: RunSpec, results: list[Raw]) -> dict[str, object]:
    """One line from the raw results of the run's processes."""
    hits: list[tuple[int, float, Optional[float]]] = []
    for result in results:
        hits.extend((int(i), float(t), None if c is None else float(c))
                    for i, t, c in result["hits"])
    ends = [float(r["window_end"]) for r in results if "window_end" in r]
    window_end = max(ends) if ends else None
    fields = summarize(spec, hits, window_end)
    fields["cpu_s"] = round(sum(float(r["cpu_s"]) for r in results), 4)
    fields["rss_peak_mb"] = round(max(float(r["rss_peak_mb"]) for r in results), 1)
    for key in ("setup_s", "setup_cpu_s", "stop_s", "register_s", "start_s", "rss_base_mb",
                "rss_growth_mb", "rss_peak_after_start_mb", "cpu_s_per_min", "makespan_s"):
        values = [float(r[key]) for r in results if r.get(key) is not None]
        if values:
            fields[key] = round(max(values), 4)
    ready = [float(r["ready_ts"]) for r in results if "ready_ts" in r]
    if ready and spec.t0_ms is not None:
        fields["ready_margin_s"] = round(spec.t0_ms / 1000 - max(ready), 3)
    if spec.processes > 1:
        fields["share"] = [len(r["hits"]) for r in results]
    if "redis_cpu_s" in results[0]:
        fields["redis_cpu_s"] = round(float(results[0]["redis_cpu_s"]), 3)
    fields["version"] = results[0].get("version")
    fields["settings"] = results[0].get("settings")
    stderr = [str(r["stderr"]) for r in results if r.get("stderr")]
    if stderr:
        fields["stderr"] = stderr
    return fields


if __name__ == "__main__":
    raise SystemExit(main())
