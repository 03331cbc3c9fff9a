"""Schedulers on Redis as it is deployed: TLS, an ACL user, bad credentials, and Sentinel.

Every server here is real (``tests/redis_deploy_servers.py``), on a free loopback port; the
TLS certificates are made for each run. Waits poll for the awaited event with generous
bounds, never sleep through a schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection
from redis.exceptions import NoPermissionError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from pyscheduler import (
    BackendUnavailableError,
    IntervalSchedule,
    Job,
    JobContext,
    RedisBackend,
    Scheduler,
    SchedulerConfig,
)

from .readme_samples import README
from .redis_deploy_servers import (
    SentinelGroup,
    TlsFiles,
    TlsRedisServer,
    make_tls_files,
    wait_until,
)
from .redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

WAIT = 20.0  # generous bound (real seconds) for anything awaited
#: short leases, refreshed often: a run outlives its lease several times over in a second
FAST: dict[str, float] = {"tick_interval": 0.05, "lock_ttl": 1.0, "lock_refresh_interval": 0.2}


class Runs:
    """A handler recording every start as (scheduled_at, fence, attempt, wall time)."""

    def __init__(self, behaviour: Optional[Callable[[JobContext], None]] = None) -> None:
        self.starts: list[tuple[datetime, int, int, float]] = []
        self._behaviour = behaviour
        self._lock = threading.Lock()

    def __call__(self, ctx: JobContext) -> None:
        with self._lock:
            self.starts.append((ctx.scheduled_at, ctx.fencing_token, ctx.attempt, time.time()))
        if self._behaviour is not None:
            self._behaviour(ctx)

    def wait(self, count: int, after: float = 0.0) -> None:
        """Until ``count`` runs scheduled after the epoch time ``after`` have started."""
        wait_until(lambda: len(self.since(after)) >= count, f"{count} runs after {after}",
                   timeout=WAIT)

    def since(self, after: float) -> list[tuple[datetime, int, int, float]]:
        with self._lock:
            return [run for run in self.starts if run[0].timestamp() > after]


class LongRun:
    """A handler that runs until released, recording whether each run kept its lease."""

    def __init__(self) -> None:
        self.started, self.release, self.ended = (threading.Event(), threading.Event(),
                                                  threading.Event())
        self.fences: list[int] = []
        self.kept: list[bool] = []

    def __call__(self, ctx: JobContext) -> None:
        self.fences.append(ctx.fencing_token)
        self.started.set()
        while not self.release.is_set() and not ctx.cancelled:
            ctx.sleep(0.02)
        self.kept.append(not ctx.cancelled)
        self.ended.set()

    @property
    def kept_lease(self) -> bool:
        """Every run ended with its lease (and there was one)."""
        return bool(self.kept) and all(self.kept)


def grid(every: float, lead: float = 0.5) -> datetime:
    """An instant ``lead`` seconds ahead on a multiple of ``every``: a shared start_at."""
    at = (time.time() // every + 1) * every + lead
    return datetime.fromtimestamp(at, timezone.utc)


def pyscheduler_problems(caplog: pytest.LogCaptureFixture,
                         *expected: str) -> list[logging.LogRecord]:
    """What pyscheduler logged at WARNING or above, or with a traceback, but ``expected``."""
    return [r for r in caplog.records
            if r.name.startswith("pyscheduler") and (r.levelno >= logging.WARNING or r.exc_info)
            and not any(text in r.getMessage() for text in expected)]


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path, tls_files)
    yield server
    server.stop()


def tls_scheduler(server: TlsRedisServer, how: str) -> Scheduler:
    if how == "from_url":
        return Scheduler(RedisBackend.from_url(server.url, key_prefix="tls"),
                         config=SchedulerConfig(**FAST))
    return Scheduler.from_config(SchedulerConfig(backend_type="redis", redis_url=server.url,
                                                 key_prefix="tls", **FAST))


@pytest.mark.parametrize("how", ["from_url", "redis_url"])
def test_a_scheduler_over_tls_runs_jobs_and_refreshes_its_leases(tls_server, how, caplog):
    # Given a server that speaks TLS only, and a scheduler on its rediss:// URL (the CA in
    # ssl_ca_certs), with a short job and one that outlives its 1 s lease
    scheduler = tls_scheduler(tls_server, how)
    tick, long = Runs(), LongRun()
    scheduler.register(Job("tick", IntervalSchedule(0.1), tick))
    scheduler.register(Job("long", IntervalSchedule(3600), long))
    refresher = scheduler.backend._refresh_client
    assert issubclass(refresher.connection_pool.connection_class, SSLConnection)
    admin = tls_server.client(decode_responses=True)
    try:
        # When it runs
        with scheduler:
            tick.wait(3)
            scheduler.run_now("long")
            assert long.started.wait(WAIT)
            # Then the long run still holds its lease past its TTL: refreshed over TLS
            claimed_at = time.monotonic()
            wait_until(lambda: time.monotonic() - claimed_at > 2.5, "2.5 s into the long run")
            assert not long.ended.is_set()
            assert 0 < admin.pttl("{tls}:lease:long") <= 1_000
            long.release.set()
            assert long.ended.wait(WAIT)
        assert long.kept_lease and len(long.kept) == 1
        assert admin.hget("{tls}:job:tick", "run_count") not in (None, "0")
    finally:
        admin.close()
    assert pyscheduler_problems(caplog) == []


def test_a_client_that_does_not_trust_the_ca_is_refused_with_one_clear_error(tls_server,
                                                                             caplog):
    # Given the TLS server, and a rediss:// URL without its CA (so the system's CAs judge)
    address = f"127.0.0.1:{tls_server.port}"
    scheduler = Scheduler(RedisBackend.from_url(f"rediss://{address}/0"))
    # When the scheduler starts, then it fails once, naming the server and the reason
    with pytest.raises(BackendUnavailableError) as info:
        scheduler.start()
    message = str(info.value)
    assert f"rediss://{address}/0" in message and "certificate verify failed" in message
    assert pyscheduler_problems(caplog) == []
    # ...while a client given the CA is served by the same server
    trusted = tls_server.client()
    assert trusted.ping()
    trusted.close()


# -- ACL ---------------------------------------------------------------------------------------


def readme_acl(prefix: str, password: str) -> list[str]:
    """The README's ``ACL SETUSER`` line, for ``prefix`` and ``password``, as arguments."""
    (line,) = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()
               if line.strip().startswith("ACL SETUSER")]
    line = line.replace("{pyscheduler}", "{" + prefix + "}").replace(">change-me",
                                                                      f">{password}")
    return line.split()


@pytest.fixture
def acl_server(redis_server_factory) -> RedisServer:
    """A server that evicts (so there is a policy to warn about), with the README's ACL
    user ``sched`` (password ``pw``) for key_prefix ``acl``."""
    server = redis_server_factory("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    admin = server.client()
    try:
        assert admin.execute_command(*readme_acl("acl", "pw")) in (b"OK", "OK")
    finally:
        admin.close()
    return server


def test_the_readme_acl_is_enough_for_every_scheduler_call(acl_server, caplog):
    # Given two schedulers logged in as the README's ACL user, on a server that evicts
    url = f"redis://sched:pw@127.0.0.1:{acl_server.port}/0"
    backend = RedisBackend.from_url(url, key_prefix="acl")
    scheduler = Scheduler(backend, config=SchedulerConfig(**FAST))
    peer = Scheduler(RedisBackend.from_url(url, key_prefix="acl"),
                     config=SchedulerConfig(**FAST))
    tick, long, stuck = Runs(), LongRun(), LongRun()
    scheduler.register(Job("tick", IntervalSchedule(0.1), tick))
    scheduler.register(Job("long", IntervalSchedule(3600), long))
    scheduler.register(Job("stuck", IntervalSchedule(3600), stuck))
    for each in (scheduler, peer):
        each.register(Job("doomed", IntervalSchedule(0.1), Runs()))
    admin = acl_server.client(decode_responses=True)
    try:
        # When they register, claim, refresh, finish, are managed and stop
        with caplog.at_level(logging.INFO, logger="pyscheduler.redis"):
            scheduler.start()
        peer.start()
        tick.wait(2)
        scheduler.run_now("long")  # a run that outlives its lease: refreshed
        assert long.started.wait(WAIT)
        started = time.monotonic()
        wait_until(lambda: time.monotonic() - started > 1.5, "1.5 s into the long run")
        assert not long.ended.is_set()
        long.release.set()
        assert long.ended.wait(WAIT) and long.kept_lease
        scheduler.pause("tick")
        assert scheduler.get_job("tick").metadata.status.value == "paused"
        scheduler.resume("tick")
        tick.wait(1, after=time.time())
        # (a removed job is dropped by the peer when its claim finds the tombstone)
        scheduler.remove("doomed")
        wait_until(lambda: [job.name for job in peer.jobs()] == [], "the peer dropping doomed")
        assert backend.job_names() == ["long", "stuck", "tick"]
        assert backend.now_ms() > 0
        # (the run history is written by the finish script and read back, group-wide too)
        assert backend.history("tick", 5) and backend.history(None, 5)
        # (a value not of our form is reset, and the job re-created)
        admin.delete("{acl}:job:tick")
        admin.set("{acl}:job:tick", "not a hash")
        tick.wait(1, after=time.time() + 0.5)
        scheduler.run_now("stuck")
        assert stuck.started.wait(WAIT)
        report = scheduler.stop(timeout=0.2)  # stuck is handed back: interrupt
        # Then everything worked, and the eviction policy, which it may not read, was one
        # INFO line saying so
        assert report.still_running == ["stuck"]
        assert admin.exists("{acl}:lease:stuck") == 0
        assert admin.hget("{acl}:job:stuck", "status") != "running"
        assert not admin.sismember("{acl}:jobs", "doomed")
    finally:
        scheduler.stop()
        peer.stop()
        admin.close()
    assert pyscheduler_problems(caplog, "a cancelled handler returned",
                                "held a value not of our form", "backend lost jobs") == []
    (policy,) = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert policy.levelno == logging.INFO and policy.name == "pyscheduler.redis"
    assert "could not check" in policy.getMessage() and "config|get" in policy.getMessage()


def test_the_readme_acl_keeps_the_user_inside_its_prefix(acl_server):
    # Given the README's ACL user for key_prefix "acl", and keys of another group
    admin = acl_server.client()
    admin.set("{other}:job:x", "theirs")
    admin.close()
    user = acl_server.client(username="sched", password="pw", decode_responses=True)
    try:
        # Then it may use its own keys through the scripts' commands...
        assert user.set("{acl}:probe", "1") and user.get("{acl}:probe") == "1"
        # ...but touch no other key, even from a script it loads itself
        for call in (lambda: user.get("{other}:job:x"), lambda: user.set("plain", "1"),
                     lambda: user.delete("{other}:job:x")):
            with pytest.raises(NoPermissionError):
                call()
        sha = user.script_load("return redis.call('GET', KEYS[1])")
        with pytest.raises(NoPermissionError):
            user.evalsha(sha, 1, "{other}:job:x")
        # ...and run neither administration nor key listing
        for call in (user.keys, user.flushall, lambda: user.config_get("maxmemory*"),
                     lambda: user.eval("return 1", 0)):
            with pytest.raises(NoPermissionError):
                call()
    finally:
        user.close()


# -- bad credentials, no server ----------------------------------------------------------------


def test_start_fails_with_one_clear_error_naming_the_address(redis_server_factory, tls_server,
                                                             caplog):
    server = redis_server_factory()
    admin = server.client()
    admin.acl_setuser("sched", enabled=True, passwords=["+right"], keys=["*"],
                      commands=["+@all"])
    admin.close()
    nowhere = free_port()
    cases = {  # URL -> what the error says
        f"redis://sched:pw-typo@127.0.0.1:{server.port}/0": "authentication failed",
        f"redis://127.0.0.1:{nowhere}/0": "cannot reach",
        f"redis://127.0.0.1:{tls_server.port}/0": "cannot reach",  # plain text to TLS
    }
    for url, says in cases.items():
        scheduler = Scheduler(RedisBackend.from_url(url, key_prefix="bad"),
                              config=SchedulerConfig(**FAST))
        scheduler.register(Job("tick", IntervalSchedule(0.1), Runs()))
        began = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            scheduler.start()
        assert time.monotonic() - began < 5.0, url
        address = "redis://" + url.split("@")[-1].removeprefix("redis://")
        message = str(info.value)
        assert says in message and f"Redis at {address}" in message, message
        assert "typo" not in message  # nor the password
        scheduler.stop()
    assert pyscheduler_problems(caplog) == []


# -- Sentinel ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One group for the module (it takes seconds to settle); a test may fail it over, so
    each asks it where the master is."""
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel"))
    yield group
    group.stop()


def sentinel_scheduler(group: SentinelGroup, prefix: str, *jobs: Job,
                       sentinel: Optional[Sentinel] = None, lock_ttl: float = 8) -> Scheduler:
    sentinel = sentinel or Sentinel(group.addresses, socket_timeout=1, socket_connect_timeout=1)
    client = sentinel.master_for(group.service, socket_timeout=1, socket_connect_timeout=1,
                                 retry=Retry(NoBackoff(), 1))
    scheduler = Scheduler(RedisBackend(client, key_prefix=prefix),
                          config=SchedulerConfig(tick_interval=0.05, lock_ttl=lock_ttl,
                                                 lock_refresh_interval=0.3))
    for job in jobs:
        scheduler.register(job)
    return scheduler


def lease_expiry(client: redis.Redis, key: str) -> float:
    """When ``key`` expires, as a ``time.monotonic()`` instant: a refresh moves it on."""
    ttl = client.pttl(key)
    assert ttl > 0, f"{key} has no TTL ({ttl})"
    return time.monotonic() + ttl / 1000


def wait_for_refresh(client: redis.Redis, key: str, expiry: float, what: str) -> None:
    """Until ``key`` expires clearly later than ``expiry`` (a refresh, not clock noise)."""
    wait_until(lambda: lease_expiry(client, key) > expiry + 0.1, what, timeout=WAIT)


def master_client(group: SentinelGroup) -> redis.Redis:
    port = group.master_port()
    assert port is not None
    return group.node(port).client(decode_responses=True)


@pytest.mark.slow
def test_the_lease_refresher_asks_the_next_sentinel_when_one_hangs(sentinel_group):
    group = sentinel_group
    # Given a scheduler whose Sentinel waits up to 30 s for a sentinel's answer, and a run
    # holding a 5 s lease
    patient = Sentinel(group.addresses, sentinel_kwargs={"socket_timeout": 30})
    long = LongRun()
    scheduler = sentinel_scheduler(group, "hang", Job("long", IntervalSchedule(3600), long),
                                   sentinel=patient, lock_ttl=5)
    master = master_client(group)
    try:
        scheduler.start()
        scheduler.run_now("long")
        assert long.started.wait(WAIT)
        # When the first sentinel hangs and the master drops every connection, so that the
        # refresher must ask the sentinels where the master is
        group.freeze_sentinel(0)
        try:
            dropped_at = time.monotonic()
            master.client_kill_filter(_type="normal", skipme=True)
            expiry = lease_expiry(master, "{hang}:lease:long")
            # Then a refresh reaches the master within the lease, through the next sentinel
            wait_for_refresh(master, "{hang}:lease:long", expiry,
                             "a refresh after the connections dropped")
            assert time.monotonic() - dropped_at < 5.0
            assert not long.ended.is_set()
        finally:
            group.freeze_sentinel(0, frozen=False)
        long.release.set()
        assert long.ended.wait(WAIT)
        assert long.kept_lease
    finally:
        scheduler.stop(timeout=WAIT)
        master.close()
        patient.close()


@pytest.mark.slow
def test_a_group_on_sentinel_follows_the_master_through_a_failover(sentinel_group):
    group = sentinel_group
    every = 0.2
    # Given two schedulers on Sentinel clients: an interval job every 0.2 s, and a long run
    # holding its lease (8 s, refreshed every 0.3 s) across the failover
    ticks, long = Runs(), LongRun()
    start_at = grid(every)
    schedulers = [sentinel_scheduler(group, "sent",
                                     Job("tick", IntervalSchedule(every, start_at), ticks),
                                     Job("long", IntervalSchedule(3600), long))
                  for _ in range(2)]
    refresher = schedulers[0].backend._refresh_client
    assert isinstance(refresher.connection_pool, SentinelConnectionPool)
    sentinels = ",".join(f"127.0.0.1:{port}" for _, port in group.addresses)
    assert schedulers[0].backend.address == f"sentinel://{sentinels}/mymaster/0"
    try:
        for scheduler in schedulers:
            scheduler.start()
        ticks.wait(5)
        schedulers[0].run_now("long")
        assert long.started.wait(WAIT)
        old = group.master_port()
        assert old is not None

        # When the master is killed and the sentinels promote the replica
        killed_at = time.time()
        group.kill_master()
        new = wait_until(lambda: (port := group.master_port()) != old and port,
                         "the sentinels naming the new master", timeout=WAIT)
        switched_at = time.time()

        # Then the group runs on the new master: new occurrences run...
        ticks.wait(5, after=switched_at + 1.0)
        master = group.node(new).client(decode_responses=True)
        try:
            assert master.smembers("{sent}:jobs") == {"tick", "long"}
            # ...and the long run's lease is refreshed there (its expiry moves on)
            expiry = lease_expiry(master, "{sent}:lease:long")
            wait_for_refresh(master, "{sent}:lease:long", expiry,
                             "a refresh of the long run's lease on the new master")
        finally:
            master.close()
        long.release.set()
        assert long.ended.wait(WAIT)
    finally:
        for scheduler in schedulers:
            scheduler.stop(timeout=WAIT)

    # The long run kept its lease through the failover, and ran once
    assert long.kept_lease and len(long.fences) == 1
    runs = sorted(ticks.starts, key=lambda run: run[3])
    # Fences strictly increase in the order the runs started, across both masters
    fences = [fence for _, fence, _, _ in runs]
    assert fences == sorted(set(fences))
    # An occurrence ran twice only if its first run was claimed while the master was dying
    counts = Counter(at for at, *_ in runs)
    first_start = {}
    for at, _, _, started in runs:
        first_start.setdefault(at, started)
    duplicates = {at for at, n in counts.items() if n > 1}
    assert {at for at in duplicates
            if not killed_at - 0.5 <= first_start[at] <= switched_at} == set()
    # and, once the group had settled, every occurrence ran, once
    settled = sorted(at for at in counts if at.timestamp() > switched_at + 1.0)
    assert len(settled) >= 3
    assert all(b - a == timedelta(seconds=every) for a, b in zip(settled, settled[1:]))
    assert all(counts[at] == 1 for at in settled)
