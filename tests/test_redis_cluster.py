"""A group spread over hash-tag partitions, on a real 3-master Redis Cluster
(:mod:`pyscheduler.backends.redis_partitions`); the contract suite runs there too (the
``redis-cluster`` backend of ``tests/conftest.py``)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timezone

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from pyscheduler import ConfigError, Control, Job, JobContext, Scheduler, SchedulerConfig
from pyscheduler.backends.redis import RedisBackend
from pyscheduler.backends.redis_partitions import (
    check_partitions,
    partition_index,
    partition_tags,
)

from .helpers import WAIT

JOBS = 30


# -- the layout, without Redis ------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3, 5, 16])
def test_each_partition_takes_its_own_share_of_the_slots(count):
    parts = partition_tags("shop", count)
    assert parts[0].tag == "{shop}"  # partition 0 keeps the one-partition layout
    ranges = [key_slot(part.tag.encode()) * count // REDIS_CLUSTER_HASH_SLOTS for part in parts]
    assert sorted(ranges) == list(range(count))
    assert [part.index for part in parts] == list(range(count))


def test_one_partition_is_the_layout_of_earlier_versions():
    (part,) = partition_tags("shop", 1)
    assert (part.tag, part.job_prefix, part.common) == (
        "{shop}", "{shop}:job:", ["{shop}:due", "{shop}:jobs", "{shop}:removed"])


def test_a_job_keeps_its_partition_across_processes():
    # crc32 of the UTF-8 name, not hash(): the same on every host, process and version; a
    # change here would move the jobs of every stored group
    assert [partition_index(name, 3) for name in ("a", "b", "report", "é")] == [
        0, 2, 2, 2]
    assert partition_index("a", 3) == 0xE8B7BE43 % 3
    assert {partition_index(f"job-{i}", 3) for i in range(JOBS)} == {0, 1, 2}


@pytest.mark.parametrize("prefix, count, message", [
    ("shop", 0, "partitions must be an integer from 1 to 256"),
    ("shop", 257, "partitions must be an integer from 1 to 256"),
    ("shop", True, "partitions must be an integer"),
    ("a{b}", 2, "must hold no brace"),
])
def test_unusable_partitions_are_refused(prefix, count, message):
    with pytest.raises(ValueError, match=message):
        check_partitions(prefix, count)


def test_the_config_reads_partitions_and_cluster():
    config = SchedulerConfig.from_env({"PYSCHEDULER_PARTITIONS": "3",
                                       "PYSCHEDULER_REDIS_CLUSTER": "yes"})
    assert (config.partitions, config.redis_cluster) == (3, True)
    assert SchedulerConfig.from_env({"PYSCHEDULER_REDIS_CLUSTER": "off"}).redis_cluster is False
    with pytest.raises(ConfigError, match="partitions: must be at most 256"):
        SchedulerConfig(partitions=300)
    with pytest.raises(ConfigError, match="redis_cluster: must be True or False"):
        SchedulerConfig(redis_cluster="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="is not a boolean"):
        SchedulerConfig.from_env({"PYSCHEDULER_REDIS_CLUSTER": "maybe"})


# -- on the cluster ---------------------------------------------------------------------------

def _cluster_config(cluster, **fields) -> SchedulerConfig:
    fields.setdefault("partitions", 3)
    return SchedulerConfig(backend_type="redis", redis_url=cluster.url, redis_cluster=True,
                           key_prefix="grp", tick_interval=0.1, takeover_delay=0.2,
                           **fields)


def _jobs(handler) -> list[Job]:
    from pyscheduler import OnceSchedule

    now = datetime.now(timezone.utc)
    return [Job(f"job-{i}", OnceSchedule(now), handler) for i in range(JOBS)]


@pytest.mark.redis
def test_a_partitioned_group_runs_every_occurrence_once_over_three_masters(
        redis_cluster, schedulers):
    # Given two schedulers of one group in 3 partitions, each registering the same jobs
    runs: Counter[str] = Counter()
    lock, all_ran, again = threading.Lock(), threading.Event(), threading.Event()

    def handler(ctx: JobContext) -> None:
        with lock:
            runs[ctx.job_name] += 1
            if len(runs) == JOBS:
                all_ran.set()
            if runs["job-7"] == 2:
                again.set()

    group = [schedulers(Scheduler.from_config(_cluster_config(redis_cluster)))
             for _ in range(2)]
    for scheduler in group:
        for job in _jobs(handler):
            scheduler.register(job)
        scheduler.start()

    # When their one-time occurrences come due
    assert all_ran.wait(WAIT)
    for scheduler in group:
        assert scheduler.wait_idle(WAIT)

    # Then each ran once, the jobs' keys sit on every master, and a control that only knows
    # the URL finds the partitions and sees every job and every run
    assert runs == Counter({f"job-{i}": 1 for i in range(JOBS)})
    for node in redis_cluster.node_clients():
        try:
            assert node.keys("{grp*}:job:*"), "a master holds no job"
        finally:
            node.close()
    with Control.from_url(redis_cluster.url, key_prefix="grp", cluster=True) as control:
        assert [job.name for job in control.jobs()] == sorted(
            f"job-{i}" for i in range(JOBS))
        assert sorted(entry.job for entry in control.history(limit=100)) == sorted(runs)
        assert len(control.instances()) == 2

        # And management reaches the job's partition: run_now runs it once more
        control.trigger("job-7")
        assert again.wait(WAIT)
        for scheduler in group:
            assert scheduler.wait_idle(WAIT)
        assert runs["job-7"] == 2 and sum(runs.values()) == JOBS + 1
        assert [entry.attempt for entry in control.history("job-7")] == [1, 1]


@pytest.mark.redis
def test_another_partition_count_is_refused_and_loses_nothing(redis_cluster):
    # Given a group stored in 3 partitions
    first = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True, partitions=3)
    first.open()
    from pyscheduler.backends.base import JobDefinition

    first.register([JobDefinition(f"job-{i}", 0, version="v1") for i in range(JOBS)])
    before = first.job_names()

    # When an instance configured with 2, or 1, opens it
    for count in (2, 1):
        other = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True,
                                      partitions=count)
        with pytest.raises(ConfigError) as refused:
            other.open()
        other.close()
        # Then it is refused with the group's count named, and every job is still there
        assert refused.value.field == "partitions"
        assert "stored in 3 partition(s), not " + str(count) in str(refused.value)
    assert first.job_names() == before and len(before) == JOBS
    first.close()


@pytest.mark.redis
def test_a_group_stored_before_partitions_counts_as_one(redis_cluster):
    # Given a one-partition group whose layout record is missing (an earlier version's)
    from pyscheduler.backends.base import JobDefinition

    old = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True)
    old.open()
    old.register([JobDefinition(f"job-{i}", 0, version="v1") for i in range(JOBS)])
    client = redis_cluster.client()
    client.delete("{grp}:layout")

    # When an instance with 3 partitions opens it, it is refused; with 1, it is recorded
    split = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True, partitions=3)
    with pytest.raises(ConfigError, match="stored in 1 partition"):
        split.open()
    split.close()
    old.open()
    assert client.get("{grp}:layout") is not None
    assert len(old.job_names()) == JOBS
    client.close()
    old.close()


@pytest.mark.redis
def test_a_partitioned_group_that_lost_its_layout_records_opens_again(redis_cluster):
    # Given a group in 3 partitions whose layout records are gone (Redis lost its data and
    # the running instances re-created their jobs), with jobs in every partition
    from pyscheduler.backends.base import JobDefinition

    group = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True, partitions=3)
    group.open()
    group.register([JobDefinition(f"job-{i}", 0, version="v1") for i in range(JOBS)])
    client = redis_cluster.client()
    for part in partition_tags("grp", 3):
        client.delete(part.layout)

    # When an instance with 3 partitions opens it, it is not taken for a one-partition group
    again = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True, partitions=3)
    again.open()
    assert len(again.job_names()) == JOBS
    single = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True)
    with pytest.raises(ConfigError, match="stored in 3 partition"):
        single.open()
    single.close()
    client.close()
    again.close()
    group.close()


@pytest.mark.redis
def test_a_prefix_that_names_another_groups_partition_is_refused(redis_cluster):
    # Given a group in 3 partitions, whose partition 1 has the tag {grp#k}
    group = RedisBackend.from_url(redis_cluster.url, "grp", cluster=True, partitions=3)
    group.open()
    tag = partition_tags("grp", 3)[1].tag.strip("{}")

    # When a group is opened under that very prefix, it is refused
    clash = RedisBackend.from_url(redis_cluster.url, tag, cluster=True)
    with pytest.raises(ConfigError, match="partition 1 of the group 'grp'"):
        clash.open()
    clash.close()
    group.close()


@pytest.mark.redis
def test_an_unreachable_cluster_is_a_backend_error():
    from pyscheduler import BackendUnavailableError
    from tests.redis_server import free_port

    with pytest.raises(BackendUnavailableError, match="cannot reach the Redis Cluster") as error:
        RedisBackend.from_url(f"redis://:secret@127.0.0.1:{free_port()}/0", cluster=True)
    assert "secret" not in str(error.value)


@pytest.mark.redis
def test_the_group_history_of_partitions_is_in_the_order_the_runs_finished(redis_cluster):
    from pyscheduler.backends.base import ClaimRequest, JobDefinition, Lease, Outcome

    # Given a group of 3 partitions and one job in each, whose runs take no time at all
    backend = RedisBackend.from_url(redis_cluster.url, "hist", cluster=True, partitions=3)
    backend.open()
    names: dict[int, str] = {}
    for index in range(100):
        names.setdefault(partition_index(f"job-{index}", 3), f"job-{index}")
    backend.register([JobDefinition(name, None) for name in names.values()])

    # When they run in turn, many within one millisecond, each finish its own call
    finished = []
    for turn in range(24):
        name = names[turn % 3]
        backend.run_now(name)
        (state,) = backend.get_states([name])
        request = ClaimRequest(name, f"owner-{turn}", state.due_ms, state.next_run_ms,
                               None, None)
        (claim,) = backend.claim("instance", [request], 60_000, 0).claims
        backend.finish([Outcome(Lease(name, claim.owner, claim.fence), True, duration=0.0,
                                history_limit=50)])
        finished.append(claim.owner)

    # Then the group's history lists them newest first, across the partitions
    assert [record.owner for record in backend.history(None, 50)] == finished[::-1]
    assert [record.owner for record in backend.history(None, 5)] == finished[:-6:-1]
    backend.close()
