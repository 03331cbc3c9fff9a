"""A schedule changed by a rolling deploy: old and new instances coexist for a while.

The rule under test: the group runs a job as it was last registered, and a claim made with
another definition is refused, so once the first new instance registered, no occurrence of
the old schedule is claimed, and the old instances never write their schedule back.
"""

from __future__ import annotations

import json
import time

import pytest

from .harness import aligned, scaled
from .spec import JobSpec

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.faults]


def test_a_rolling_deploy_switches_the_schedule_for_good(make_cluster, repetition):
    # Given 2 old instances running jobs every 0.4 s; the new definition runs them every
    # 0.6 s, on a grid offset by 0.1 s (the two grids never meet)
    cluster = make_cluster()
    start = aligned(1.2)
    old = [JobSpec("deploy", count=2, every=0.4, start_at=start)]
    new = [JobSpec("deploy", count=2, every=0.6, start_at=start + 0.1)]
    cluster.spawn_all(["old-a", "old-b"], old)
    cluster.wait_start(lambda e: True, "the old schedule running", count=6)

    # When a new instance registers the new definition, and then the old ones are replaced
    # one by one
    cluster.spawn("new-c", new)
    switched = cluster.wait_ready("new-c")["wall"]
    cluster.wait_start(lambda e: e["wall"] > switched + 1.0, "runs after the switch", count=4)
    cluster.terminate("old-a")
    cluster.spawn("new-a", new)
    cluster.terminate("old-b")
    cluster.spawn("new-b", new)
    end = time.time() + scaled(1.5)
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["scheduled_ms"] >= last_ms, "the window's end", count=2)

    # Then nothing of the old grid was claimed after the switch, by anybody, and the new
    # grid ran exactly once per occurrence from then on (the checker, over the new schedule)
    claims = [(e["instance"], c) for e in cluster.events() if e["event"] == "claim"
              for c in e["claims"]]
    old_grid = {ms for spec in old for ms in spec.occurrences_ms(start, end + 1)}
    late_old = [(instance, c) for instance, c in claims
                if c[1] in old_grid and c[5] / 1000 > switched]
    assert late_old == []
    cluster.check(new, (switched + 1.0, end), allowed_logs=("another instance registered",))
    # and the stored definition is the new one: the old instances did not write theirs back
    client = cluster.redis.client()
    try:
        for name in new[0].names():
            stored = json.loads(client.hget("{faults}:job:" + name, "def"))
            assert stored["schedule"]["every"] == 0.6, stored
    finally:
        client.close()
