"""Fixtures shared by the whole suite: a fake clock, real redis-server processes (and a real
3-master Redis Cluster), the ``backend`` fixture that runs the contract suite against every
backend, and ``schedulers``, which stops every scheduler of a test at its teardown (a guard
fails a test that leaves scheduler threads running)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import pytest

from pyscheduler.backends.base import Backend
from pyscheduler.backends.memory import MemoryBackend
from pyscheduler.clock import FakeClock
from tests.helpers import Schedulers
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer

#: the longest a Redis test may wait for its backend's clock to pass an instant: enough for a
#: short lease to run out, never a schedule
MAX_WAIT_MS = 2_000


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the session; :func:`redis_server` empties it before each test."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session_server: RedisServer) -> RedisServer:
    """A running, empty redis-server (shared by the session, flushed for each test)."""
    server = redis_session_server
    if not server.running:  # a test stopped it
        server.start()
    client = server.client()
    try:
        client.flushall()
        client.script_flush()
        client.config_resetstat()
    finally:
        client.close()
    return server


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start dedicated servers (``factory(*options, password=...)``), stopped at teardown."""
    servers: list[RedisServer] = []

    def start(*args: str, password: str = "") -> RedisServer:
        server = RedisServer(tmp_path, *args, password=password)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- schedulers stopped at teardown ---------------------------------------------------------

#: how every thread of a scheduler is named: pyscheduler-tick, -refresher, -lease-watchdog
#: and the workers' pyscheduler-worker_N
THREAD_PREFIX = "pyscheduler-"
#: the longest (real seconds) the guard waits for the threads of stopped schedulers to end
THREADS_END_WITHIN = 5.0


@pytest.fixture
def schedulers() -> Iterator[Schedulers]:
    """Register each scheduler a test makes (``schedulers(Scheduler(...))`` or
    ``schedulers.stepped(clock)``): they are all stopped at teardown.

    Ask for it after the fixtures its schedulers use (a Redis server): fixtures are torn down
    in reverse, so the schedulers stop while their backend is still there.
    """
    registry = Schedulers()
    yield registry
    registry.close()


def _scheduler_threads(ignored: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith(THREAD_PREFIX) and thread not in ignored]


@pytest.fixture(autouse=True)
def _no_scheduler_threads_left() -> Iterator[None]:
    """Fail a test whose scheduler threads outlive its teardown.

    Autouse, so set up before the fixtures a test asks for and torn down after them: after
    ``schedulers`` stopped everything. Threads of earlier tests are left to their own report.
    Stopped schedulers' workers end shortly after stop() (the pool is not joined), hence the
    bounded wait; it only lasts long when a thread really is left behind.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREADS_END_WITHIN
    while (left := _scheduler_threads(before)) and time.monotonic() < deadline:
        time.sleep(0.002)
    if left:
        names = ", ".join(sorted(thread.name for thread in left))
        pytest.fail(f"scheduler threads still alive {THREADS_END_WITHIN:g} s after teardown: "
                    f"{names}. Register every scheduler with the schedulers fixture (stopped "
                    "at teardown), and have blocking handlers wait on schedulers.event()",
                    pytrace=False)


class BackendDriver:
    """Moves a backend's clock for a test.

    The memory backend reads a :class:`FakeClock`, which the driver advances. Redis decides by
    its own ``TIME``, which cannot be moved, so the driver polls ``now_ms()`` until the instant
    has passed; tests only do that to let a short lease (~100 ms) run out.
    """

    def __init__(self, backend: Backend, clock: Optional[FakeClock],
                 make_peer: Callable[[], Backend]) -> None:
        self.backend = backend
        self._clock = clock
        self._make_peer = make_peer

    @property
    def is_redis(self) -> bool:
        return self._clock is None

    def now(self) -> int:
        return self.backend.now_ms()

    def advance_past(self, ms: int) -> None:
        """Let more than ``ms`` milliseconds of the backend's clock pass."""
        self.pass_instant(self.now() + ms)

    def pass_instant(self, instant_ms: int) -> None:
        """Return once the backend's clock is past ``instant_ms``."""
        now = self.now()
        if now > instant_ms:
            return
        if self._clock is not None:
            # A margin: FakeClock keeps float seconds, so a step can lose a millisecond.
            self._clock.advance((instant_ms - now + 2) / 1000)
            return
        assert instant_ms - now <= MAX_WAIT_MS, "a test waits on a lease, never on a schedule"
        deadline = time.monotonic() + (instant_ms - now) / 1000 + 5.0
        while self.now() <= instant_ms:
            assert time.monotonic() < deadline, "the Redis clock did not move"
            time.sleep(0.005)

    def peer(self) -> Backend:
        """Another instance on the same store (the same object for the memory backend)."""
        return self._make_peer()


@pytest.fixture(scope="session")
def redis_cluster_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServers]:
    """One 3-master Redis Cluster for the session; :func:`redis_cluster` empties it."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisClusterServers) -> RedisClusterServers:
    """A running, empty 3-master Redis Cluster (shared by the session)."""
    redis_cluster_session.flush()
    return redis_cluster_session


#: how many partitions the contract suite spreads a group over on the cluster (one a master)
CLUSTER_PARTITIONS = 3


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis-cluster", marks=pytest.mark.redis)])
def driver(request: pytest.FixtureRequest, fake_clock: FakeClock) -> Iterator[BackendDriver]:
    """A backend of each kind, opened, with the means to move its clock: memory, Redis, and
    Redis Cluster with the group in :data:`CLUSTER_PARTITIONS` partitions."""
    if request.param == "memory":
        memory = MemoryBackend(clock=fake_clock)
        yield BackendDriver(memory, fake_clock, lambda: memory)
        return
    from pyscheduler.backends.redis import RedisBackend

    on_cluster = request.param == "redis-cluster"
    server: Union[RedisServer, RedisClusterServers] = request.getfixturevalue(
        "redis_cluster" if on_cluster else "redis_server")
    opened: list[RedisBackend] = []

    def make() -> RedisBackend:
        backend = RedisBackend.from_url(
            server.url, key_prefix="contract", cluster=on_cluster,
            partitions=CLUSTER_PARTITIONS if on_cluster else 1)
        backend.open()
        opened.append(backend)
        return backend

    yield BackendDriver(make(), None, make)
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(driver: BackendDriver) -> Backend:
    """The backend under test: memory (on ``fake_clock``) and Redis (marked ``redis``)."""
    return driver.backend


#: the skip reason of :func:`tests.redis_server.redis_server_binary`
_NO_REDIS = "redis-server not found"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """Say plainly, at the end of the run, that Redis tests were skipped and how to run them.

    Among pytest's short skip lines the fact that a whole backend went untested is easy to
    miss, and a green run then looks like more than it is. The outermost wrapper (tryfirst)
    writes after everything else, the short summary included: just above the final line.
    """
    yield
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if _NO_REDIS in str(getattr(report, "longrepr", ""))]
    if not skipped:
        return
    write = terminalreporter.write_line
    terminalreporter.section("Redis tests skipped", sep="=", yellow=True, bold=True)
    write(f"{len(skipped)} Redis test{'s were' if len(skipped) != 1 else ' was'} skipped: "
          "no redis-server binary on PATH.")
    write("Install one to run them (the tests start their own servers from it):")
    write("    apt-get install redis-server    (Debian, Ubuntu)")
    write("    brew install redis              (macOS)")
    write("Set PYSCHEDULER_REQUIRE_REDIS=1 to make a missing redis-server a failure (CI does).")
