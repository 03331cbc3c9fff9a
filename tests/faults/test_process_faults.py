"""Faults of the scheduler processes: killed, frozen, starved of the GIL, stopped mid-run,
and a handler that ignores its timeout."""

from __future__ import annotations

import time

import pytest

from .harness import EVERY, aligned, scaled, ticks, wait_window
from .spec import JobSpec

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.faults]



def test_kill_9_of_the_holder_is_recovered_after_its_lease(make_cluster, repetition):
    # Given 3 instances and a 2 s one-time job among short interval jobs
    cluster = make_cluster(lock_ttl=2.0, refresh=0.5)
    start = aligned(EVERY)
    jobs = [ticks(start), JobSpec("long", once_at=start, behaviour="long", seconds=2.0)]
    cluster.spawn_all(["a", "b", "c"], jobs)
    (first,) = cluster.wait_start(lambda e: e["job"] == "long-0", "the long run")

    # When the process running it is killed
    cluster.kill(first["instance"])
    killed_at = time.monotonic()

    # Then another instance re-runs the occurrence as attempt 2, once the lease ran out
    (again,) = cluster.wait_start(lambda e: e["job"] == "long-0" and e["attempt"] == 2,
                                  "the recovery")
    assert again["instance"] != first["instance"] and again["kind"] == "recovery"
    assert again["fence"] > first["fence"]
    assert again["mono"] - killed_at >= cluster.lock_ttl - cluster.refresh - 0.1
    cluster.wait_for(lambda e: e["event"] == "finish" and e["job"] == "long-0"
                     and e["attempt"] == 2, "the recovery's end")
    end = time.time() + scaled(1.0)
    wait_window(cluster, end)
    cluster.check(jobs, (start, end))


def test_sigstop_past_the_lease_means_takeover_and_a_rejected_stale_result(make_cluster,
                                                                           repetition):
    # Given 2 instances and a 4 s one-time job (2 s leases)
    cluster = make_cluster(lock_ttl=2.0, refresh=0.5)
    start = aligned(EVERY)
    jobs = [ticks(start), JobSpec("long", once_at=start, behaviour="long", seconds=4.0)]
    cluster.spawn_all(["a", "b"], jobs)
    (first,) = cluster.wait_start(lambda e: e["job"] == "long-0", "the long run")
    holder = first["instance"]

    # When its holder is frozen until the other instance took the occurrence over
    with cluster.frozen(holder):
        (again,) = cluster.wait_start(lambda e: e["job"] == "long-0" and e["attempt"] == 2,
                                      "the takeover")

    # Then the takeover has a higher fence, and the thawed holder's run is cancelled at once
    assert again["instance"] != holder and again["fence"] > first["fence"]
    (end,) = cluster.wait_for(lambda e: e["event"] == "finish" and e["job"] == "long-0"
                              and e["instance"] == holder, "the old holder's end")
    assert end["outcome"] == "cancelled" and "lease lost" in end["reason"]
    cluster.wait_for(lambda e: e["event"] == "finish" and e["job"] == "long-0"
                     and e["attempt"] == 2, "the takeover's end")
    end_at = time.time() + scaled(1.0)
    wait_window(cluster, end_at)
    cluster.check(jobs, (start, end_at))


def test_sigstop_within_the_lease_changes_nothing(make_cluster, repetition):
    # Given 2 instances, 3 s leases refreshed every 0.5 s, and a 2.5 s one-time job
    cluster = make_cluster(lock_ttl=3.0, refresh=0.5)
    start = aligned(EVERY)
    jobs = [ticks(start), JobSpec("long", once_at=start, behaviour="long", seconds=2.5)]
    cluster.spawn_all(["a", "b"], jobs)
    (first,) = cluster.wait_start(lambda e: e["job"] == "long-0", "the long run")

    # When its holder is frozen for 0.8 s, well inside the lease
    with cluster.frozen(first["instance"]):
        time.sleep(0.8)  # the injected fault

    # Then the run completes where it started, and nothing is excused: no takeover, no
    # lease warning
    (end,) = cluster.wait_for(lambda e: e["event"] == "finish" and e["job"] == "long-0",
                              "the run's end")
    assert end["instance"] == first["instance"] and end["outcome"] == "ok"
    end_at = time.time() + scaled(1.0)
    wait_window(cluster, end_at)
    cluster.check(jobs, (start, end_at))
    assert not cluster.faults[0].explains


def test_a_refresher_starved_by_a_handler_holding_the_gil_loses_the_lease(make_cluster,
                                                                          repetition):
    # Given 2 instances and a job whose first attempt holds the GIL 1.5 s past the lease
    cluster = make_cluster(lock_ttl=2.0, refresh=0.5)
    start = aligned(EVERY)
    jobs = [ticks(start), JobSpec("gil", once_at=start, behaviour="gil", seconds=3.5)]
    cluster.spawn_all(["a", "b"], jobs)

    # When it runs
    (first,) = cluster.wait_start(lambda e: e["job"] == "gil-0", "the GIL-holding run")

    # Then the other instance takes over once the lease ran out, and the starved holder's
    # result is rejected: by the sink (a higher fence began) and by the backend (stale)
    (again,) = cluster.wait_start(lambda e: e["job"] == "gil-0" and e["attempt"] == 2,
                                  "the takeover")
    assert again["instance"] != first["instance"] and again["fence"] > first["fence"]
    (end,) = cluster.wait_for(lambda e: e["event"] == "finish" and e["job"] == "gil-0"
                              and e["attempt"] == 1, "the starved run's end")
    assert end["sink"] is False
    cluster.wait_for(lambda e: e["event"] == "log" and e["instance"] == first["instance"]
                     and ("stale completion" in e["msg"] or "lease lost" in e["msg"]),
                     "the starved holder's warning")
    end_at = time.time() + scaled(1.0)
    wait_window(cluster, end_at)
    cluster.check(jobs, (start, end_at))


def test_sigterm_mid_run_hands_the_occurrence_back_at_once(make_cluster, repetition):
    # Given 2 instances with 6 s leases and a 3 s one-time job
    cluster = make_cluster(lock_ttl=6.0, refresh=1.0)
    start = aligned(EVERY)
    jobs = [ticks(start), JobSpec("long", once_at=start, behaviour="long", seconds=3.0)]
    cluster.spawn_all(["a", "b"], jobs, stop_timeout=0.3)
    (first,) = cluster.wait_start(lambda e: e["job"] == "long-0", "the long run")

    # When its holder gets SIGTERM mid-run
    stopped_at = cluster.terminate(first["instance"], fault=True)

    # Then the other instance recovers it well before the lease would have run out
    (again,) = cluster.wait_start(lambda e: e["job"] == "long-0" and e["attempt"] == 2,
                                  "the recovery")
    assert again["kind"] == "recovery" and again["instance"] != first["instance"]
    assert again["mono"] - stopped_at < cluster.lock_ttl / 2
    cluster.wait_for(lambda e: e["event"] == "finish" and e["job"] == "long-0"
                     and e["attempt"] == 2, "the recovery's end")
    end_at = time.time() + scaled(1.0)
    wait_window(cluster, end_at)
    cluster.check(jobs, (start, end_at))


def test_a_timed_out_handler_ignoring_cancellation_is_retried_after_its_lease(make_cluster,
                                                                              repetition):
    # Given 2 instances with clocks 3 s apart, and a job that times out after 0.5 s, goes on
    # for 1.5 s ignoring its token, then fails; one retry after 0.5 s
    cluster = make_cluster(lock_ttl=2.0, refresh=0.5)
    start = aligned(EVERY)
    delay = 0.5
    jobs = [ticks(start), JobSpec("slow", once_at=start, behaviour="ignore_cancel_then_fail",
                                  seconds=1.5, timeout=0.5, retries=1, retry_delay=delay)]
    # (the slow clock registers the jobs: a fast one would skip its first occurrences, see
    # test_clock_skew.py)
    cluster.spawn("a", jobs, skew=-3.0)
    cluster.spawn("b", jobs, skew=3.0)

    # When it runs
    (retry,) = cluster.wait_start(lambda e: e["job"] == "slow-0" and e["attempt"] == 2,
                                  "the retry")
    cluster.wait_for(lambda e: e["event"] == "finish" and e["job"] == "slow-0"
                     and e["attempt"] == 1, "the first attempt's end")
    end_at = time.time() + scaled(1.0)
    wait_window(cluster, end_at)

    # Then the retry waits the backoff on the backend's clock, from when the failure was
    # recorded (the instances' clocks are 6 s apart), and for the first attempt's lease to
    # run out, since its handler goes on
    events = cluster.events()
    (first,) = [e for e in events if e["event"] == "start" and e["job"] == "slow-0"
                and e["attempt"] == 1]
    (recorded,) = [e for e in events if e["event"] in ("claim", "finish_call")
                   and "error" not in e
                   and ["slow-0", first["fence"], True] in e["finished"]]
    recorded_at = recorded["wall"] - (recorded["done"] - recorded["sent"])
    kept = [(e["sent"] + e["wall"] - e["mono"], e["done"] + e["wall"] - e["mono"])
            for e in events if e["event"] in ("claim", "refresh") and "error" not in e
            and e["instance"] == first["instance"] and e["sent"] < recorded["sent"]
            and (["slow-0", first["fence"], True] in e.get("leases", ())
                 or any(c[0] == "slow-0" and c[2] == first["fence"]
                        for c in e.get("claims", ())))]
    sent, done = max(kept)
    (claim,) = [c for e in events if e["event"] == "claim" for c in e["claims"]
                if c[0] == "slow-0" and c[3] == 2]
    claimed_at = claim[5] / 1000
    assert claimed_at >= recorded_at + delay - 0.05
    assert claimed_at >= sent + cluster.lock_ttl - 0.05
    assert claimed_at <= max(recorded_at + delay, done + cluster.lock_ttl) + 1.0
    assert retry["kind"] == "retry"
    # and it starts only once the first attempt returned: no overlap
    cluster.check(jobs, (start, end_at), allowed_logs=("timed out", "job failed",
                                                       "cancelled handler returned"))
