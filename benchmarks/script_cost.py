"""What RedisBackend's claim and finish scripts cost Redis per job, by jobs per call.

On a redis-server of its own (a free loopback port, no persistence), it registers N
one-time jobs due at once, claims them B per call, then records their outcomes B per call
(with a run-history record each, as the scheduler's default does), and reads Redis's
``INFO commandstats``: the time inside ``EVALSHA`` per job and per call, and how much of
it the commands the scripts ran account for (the rest is the Lua interpreter: reading,
checking and writing back the job's fields, encoding the replies).

``python -m benchmarks.script_cost [--jobs 2000] [--per-call 1,10,50]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from pyscheduler import Job, OnceSchedule
from pyscheduler.backends.base import ClaimRequest, Lease, Outcome
from pyscheduler.management import job_definition

from .redis_server import RedisServer

__all__ = ["ScriptCost", "main", "measure"]

#: how far ahead the jobs are due when registered; measuring starts once they are due.
_DUE_AFTER = timedelta(milliseconds=200)
_LEASE_MS = 30_000
_HISTORY_LIMIT = 10


@dataclass(frozen=True)
class ScriptCost:
    """Microseconds inside the scripts (``script``) and in the commands they ran
    (``commands``), per job; ``per_call`` is the script time of one call."""

    per_call_jobs: int
    claim_script: float
    claim_commands: float
    claim_per_call: float
    finish_script: float
    finish_commands: float
    finish_per_call: float


def _split(stats: dict[str, Any], jobs: int) -> tuple[float, float, float]:
    script = stats["cmdstat_evalsha"]
    commands = sum(value["usec"] for name, value in stats.items()
                   if name.startswith("cmdstat_") and name != "cmdstat_evalsha")
    return script["usec"] / jobs, commands / jobs, float(script["usec_per_call"])


def measure(server: RedisServer, jobs: int, per_call: int) -> ScriptCost:
    from pyscheduler.backends.redis import RedisBackend

    server.flush()
    backend = RedisBackend(server.client, key_prefix="script-cost")
    backend.open()
    due = datetime.now(timezone.utc) + _DUE_AFTER
    definitions = [Job(f"job-{index}", OnceSchedule(due), lambda: None) for index in range(jobs)]
    states = backend.register([job_definition(job, due - _DUE_AFTER) for job in definitions])
    time.sleep(_DUE_AFTER.total_seconds() * 2)  # until they are due by Redis's clock
    server.client.config_resetstat()
    leases: list[Lease] = []
    for first in range(0, jobs, per_call):
        requests = [
            ClaimRequest(job.name, f"owner-{first + offset}", state.due_ms or 0,
                         state.next_run_ms, state.next_run_ms, None,
                         definition_version=job.definition_version)
            for offset, (job, state) in enumerate(zip(definitions[first:first + per_call],
                                                      states[first:first + per_call]))]
        batch = backend.claim("script-cost", requests, _LEASE_MS, 0)
        if len(batch.claims) != len(requests):
            raise SystemExit(f"claims refused: {batch.refused}")
        leases += [Lease(claim.job_name, claim.owner, claim.fence) for claim in batch.claims]
    claimed = _split(server.client.info("commandstats"), jobs)
    server.client.config_resetstat()
    for first in range(0, jobs, per_call):
        backend.finish([Outcome(lease, True, duration=0.001, history_limit=_HISTORY_LIMIT)
                        for lease in leases[first:first + per_call]])
    finished = _split(server.client.info("commandstats"), jobs)
    return ScriptCost(per_call, *claimed, *finished)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.script_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--per-call", default="1,10,50",
                        help="comma-separated jobs per script call (default: %(default)s)")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.per_call.split(",") if size.strip()]
    print(f"{'jobs/call':>9}  {'claim us/job':>12}  {'of which cmds':>13}  {'us/call':>8}  "
          f"{'finish us/job':>13}  {'of which cmds':>13}  {'us/call':>8}")
    with RedisServer.launch() as server:
        for size in sizes:
            cost = measure(server, args.jobs, size)
            print(f"{size:>9}  {cost.claim_script:>12.1f}  {cost.claim_commands:>13.1f}  "
                  f"{cost.claim_per_call:>8.0f}  {cost.finish_script:>13.1f}  "
                  f"{cost.finish_commands:>13.1f}  {cost.finish_per_call:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
