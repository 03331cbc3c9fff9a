"""The fenced sink: a downstream store on its own redis-server, never faulted.

Every run writes to it twice, through one Lua script that keeps the highest fence seen per
job: ``begin`` when the handler starts (accepted only if its fence is above every fence seen
for the job, which it then becomes) and ``commit`` when it finishes (accepted only if no
higher fence was seen since, i.e. no newer run of the job began). That is what the README
asks of a downstream system. Each write, accepted or not, is appended to a log with the
sink's own ``TIME``, which the checker reads.
"""

from __future__ import annotations

import json
from typing import Any

import redis

__all__ = ["LOG_KEY", "Sink", "read_log"]

LOG_KEY = "sink:log"

# KEYS: the job's highest-fence key, the log list
# ARGV: phase (begin|commit), fence, job, scheduled_ms, attempt, instance
# Returns 1 if the write was accepted, else 0. Fences are below 2^53, exact as Lua numbers.
_SCRIPT = """
local fence = tonumber(ARGV[2])
local top = tonumber(redis.call('GET', KEYS[1]) or '-1')
local accepted = fence > top or (ARGV[1] == 'commit' and fence == top)
if accepted then redis.call('SET', KEYS[1], ARGV[2]) end
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[2], cjson.encode({phase = ARGV[1], fence = ARGV[2], job = ARGV[3],
  scheduled_ms = ARGV[4], attempt = ARGV[5], instance = ARGV[6], sec = t[1], usec = t[2],
  accepted = accepted and 1 or 0}))
return accepted and 1 or 0
"""


class Sink:
    """A client of the sink, shared by an instance's worker threads."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=10)
        self._script = self._client.register_script(_SCRIPT)

    def write(self, phase: str, job: str, fence: int, scheduled_ms: int, attempt: int,
              instance: str) -> bool:
        """One fenced write; whether the sink accepted it."""
        reply = self._script(keys=[f"sink:top:{job}", LOG_KEY],
                             args=[phase, fence, job, scheduled_ms, attempt, instance])
        return bool(reply)


def read_log(client: redis.Redis) -> list[dict[str, Any]]:
    """The sink's log, in the order the sink applied the writes."""
    records = []
    for raw in client.lrange(LOG_KEY, 0, -1):
        record = json.loads(raw)
        records.append({
            "phase": record["phase"], "job": record["job"], "fence": int(record["fence"]),
            "scheduled_ms": int(record["scheduled_ms"]), "attempt": int(record["attempt"]),
            "instance": record["instance"], "accepted": bool(record["accepted"]),
            "t": int(record["sec"]) + int(record["usec"]) / 1e6,
        })
    return records
