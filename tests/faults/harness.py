"""The fault suite's harness: a Redis, a sink, scheduler processes behind proxies, and faults.

A :class:`Cluster` starts a redis-server for the group (``DEBUG`` enabled, no persistence)
and another for the sink, spawns :mod:`tests.faults.instance` processes, each talking to
Redis through its own :class:`~tests.faults.proxy.Proxy`, and injects faults, recording each
one (kind, monotonic and wall span, instances touched) for the checker. Waits poll the
histories for an event with a generous deadline; they never sleep through a schedule (the
only sleeps are the length of an injected fault).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from .checker import Fault, Gap, Scenario, check, load_history, runs_of
from .proxy import Proxy
from .sink import read_log
from .spec import JobSpec, dump_specs

__all__ = ["BOUND", "LATE_RESULT_BUG", "RUNS", "Cluster", "Instance", "aligned", "scaled"]

ROOT = Path(__file__).resolve().parents[2]
#: generous upper bound, in seconds, for anything awaited
BOUND = 60.0
#: PYSCHEDULER_FAULT_RUNS: repetitions of every scenario; above 1, windows are longer too
RUNS = max(1, int(os.environ.get("PYSCHEDULER_FAULT_RUNS", "1") or 1))


#: A product bug the suite found (fixed in e3be6b5), named where a scenario would meet it.
LATE_RESULT_BUG = ("a holder's result that reaches Redis after its lease expired is accepted "
                   "when nobody took over meanwhile: a run cancelled for its lost lease is "
                   "then recorded as failed and its occurrence never recovered (the README "
                   "says a late result is rejected as stale)")


def scaled(seconds: float) -> float:
    """A window length: as given for the CI-sized run, doubled for the full one."""
    return seconds * (2 if RUNS > 1 else 1)


def aligned(every: float, lead: float = 2.0) -> float:
    """An epoch time at least ``lead`` seconds ahead, on a multiple of ``every``."""
    return math.ceil((time.time() + lead) / every) * every

#: the interval of the ``tick`` jobs that run alongside a scenario's faulted one
EVERY = 0.3


def ticks(start: float, count: int = 4) -> JobSpec:
    """Short interval jobs running alongside the faulted one."""
    return JobSpec("tick", count=count, every=EVERY, start_at=start)


def wait_window(cluster: Cluster, end: float, count: int = 4) -> None:
    """Wait until every tick job started an occurrence at or past ``end`` (epoch seconds)."""
    last_ms = round(end * 1000)
    cluster.wait_start(lambda e: e["job"].startswith("tick") and e["scheduled_ms"] >= last_ms,
                       "the window's end", count=count)


@dataclass
class Instance:
    name: str
    process: subprocess.Popen[bytes]
    proxy: Proxy
    history: Path
    stderr: Path
    jobs: list[JobSpec] = field(default_factory=list)
    expected_exit: tuple[int, ...] = (0,)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class Cluster:
    """Scheduler processes on one Redis, with a fenced sink, and the faults injected."""

    def __init__(self, directory: Path, start_server: Callable[..., Any], *,
                 lock_ttl: float = 2.0, refresh: float = 0.5, tick: float = 0.1,
                 prefix: str = "faults") -> None:
        self.directory = directory
        self.redis = start_server("--enable-debug-command", "local")
        self.sink = start_server()
        self.lock_ttl, self.refresh, self.tick, self.prefix = lock_ttl, refresh, tick, prefix
        self.instances: dict[str, Instance] = {}
        self.faults: list[Fault] = []
        self._admin = self.redis.client(socket_timeout=30)

    # -- instances ---------------------------------------------------------------------------

    def spawn(self, name: str, jobs: Sequence[JobSpec], *, wait: bool = True,
              **options: Any) -> Instance:
        """Start instance ``name`` running ``jobs``; ``options`` become its command-line
        options (``skew=5`` is ``--skew 5``), over the cluster's lease settings."""
        assert name not in self.instances, name
        settings: dict[str, Any] = {"lock_ttl": self.lock_ttl, "refresh": self.refresh,
                                    "tick": self.tick, "prefix": self.prefix, **options}
        proxy = Proxy(self.redis.port)
        history = self.directory / f"{name}.jsonl"
        history.touch()
        stderr = self.directory / f"{name}.stderr"
        command = [sys.executable, "-m", "tests.faults.instance", "--id", name,
                   "--url", f"redis://127.0.0.1:{proxy.port}/0", "--sink-url", self.sink.url,
                   "--history", str(history), "--jobs", dump_specs(list(jobs))]
        for key, value in settings.items():
            if value is not None:
                command += [f"--{key.replace('_', '-')}", str(value)]
        with open(stderr, "wb") as err:
            process = subprocess.Popen(command, cwd=ROOT, stderr=err)
        instance = Instance(name, process, proxy, history, stderr, list(jobs))
        self.instances[name] = instance
        if wait:
            self.wait_ready(name)
        return instance

    def spawn_all(self, names: Sequence[str], jobs: Sequence[JobSpec],
                  **options: Any) -> list[Instance]:
        """Start several instances at once and wait until every one is ready."""
        started = [self.spawn(name, jobs, wait=False, **options) for name in names]
        for name in names:
            self.wait_ready(name)
        return started

    def wait_ready(self, name: str) -> dict[str, Any]:
        (ready,) = self.wait_for(lambda e: e["event"] == "ready" and e["instance"] == name,
                                 f"{name} ready")
        return ready

    def terminate(self, name: str, *, fault: bool = False) -> float:
        """Stop ``name`` gracefully (SIGTERM) and wait for it to exit.

        :param fault: record it as a fault (a stop in the middle of a run, whose hand-back
            explains a recovery); a stop between runs is not one.
        :returns: the monotonic time the signal was sent.
        """
        instance = self.instances[name]
        at, wall = time.monotonic(), time.time()
        instance.process.send_signal(signal.SIGTERM)
        code = instance.process.wait(BOUND)
        assert code == 0, f"{name} exited with {code}:\n{instance.stderr.read_text()}"
        if fault:
            self.faults.append(Fault("term", at, time.monotonic(), wall, time.time(), (name,)))
        return at

    def stop_all(self) -> None:
        """SIGTERM every live instance at once (so none recovers another's hand-back) and
        wait for each to exit cleanly."""
        live = [i for i in self.instances.values() if i.alive]
        for instance in live:
            instance.process.send_signal(signal.SIGTERM)
        for instance in live:
            code = instance.process.wait(BOUND)
            assert code == 0, \
                f"{instance.name} exited with {code}:\n{instance.stderr.read_text()}"

    def close(self) -> None:
        for instance in self.instances.values():
            if instance.alive:
                instance.process.kill()
                instance.process.wait(BOUND)
            instance.proxy.close()
        self._admin.close()

    # -- histories ---------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        return load_history(i.history for i in self.instances.values())

    def starts(self, job: Optional[str] = None) -> list[dict[str, Any]]:
        return [e for e in self.events()
                if e["event"] == "start" and (job is None or e["job"] == job)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                 count: int = 1, timeout: float = BOUND) -> list[dict[str, Any]]:
        """Poll the histories until ``count`` events match (a failure after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if predicate(e)]
            if len(found) >= count:
                return found
            for instance in self.instances.values():
                code = instance.process.poll()
                if code is not None and code not in instance.expected_exit:
                    raise AssertionError(f"{instance.name} died with {code} waiting for "
                                         f"{what}:\n{instance.stderr.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                     f"({len(found)} of {count})")
            time.sleep(0.02)

    def wait_start(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                   count: int = 1) -> list[dict[str, Any]]:
        return self.wait_for(lambda e: e["event"] == "start" and predicate(e), what, count)

    # -- faults ------------------------------------------------------------------------------

    def _record(self, kind: str, start: float, wall: float, instances: Sequence[str] = (),
                **flags: Any) -> Fault:
        fault = Fault(kind, start, time.monotonic(), wall, time.time(), tuple(instances),
                      **flags)
        self.faults.append(fault)
        return fault

    def outlasts_lease(self, seconds: float) -> bool:
        """Whether a fault this long may cost a lease (it can start just before a refresh)."""
        return seconds > self.lock_ttl - self.refresh

    def kill(self, name: str) -> None:
        """``kill -9``."""
        instance = self.instances[name]
        at, wall = time.monotonic(), time.time()
        instance.expected_exit = (-signal.SIGKILL,)
        instance.process.kill()
        instance.process.wait(BOUND)
        self.faults.append(Fault("kill", at, at, wall, wall, (name,), kills=True))

    @contextmanager
    def frozen(self, name: str) -> Iterator[None]:
        """SIGSTOP ``name`` for the body of the ``with``, then SIGCONT."""
        process = self.instances[name].process
        at, wall = time.monotonic(), time.time()
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)
            length = time.monotonic() - at
            self._record("sigstop", at, wall, (name,), freezes=True,
                         explains=self.outlasts_lease(length))

    @contextmanager
    def partitioned(self, name: str, *, reset: bool) -> Iterator[None]:
        """Black-hole ``name``'s link for the body, then heal it late or by a reset."""
        proxy = self.instances[name].proxy
        at, wall = time.monotonic(), time.time()
        proxy.hold()
        try:
            yield
        finally:
            proxy.heal(reset=reset)
            self._record("partition-reset" if reset else "partition-late", at, wall, (name,),
                         explains=self.outlasts_lease(time.monotonic() - at))

    @contextmanager
    def slow_link(self, name: str, seconds: float) -> Iterator[None]:
        """Add ``seconds`` of latency each way on ``name``'s link for the body."""
        proxy = self.instances[name].proxy
        at, wall = time.monotonic(), time.time()
        proxy.set_latency(seconds)
        try:
            yield
        finally:
            proxy.set_latency(0.0)
            # Chunks read before this still arrive late: the fault lasts until they do.
            time.sleep(seconds)
            self._record("latency", at, wall, (name,),
                         explains=self.outlasts_lease(2 * seconds))

    def lose_replies(self, name: str, match: bytes, count: int) -> None:
        """Lose the replies to ``name``'s next ``count`` requests containing ``match``, and
        wait until they were lost. An ambiguous failure: a claim whose reply was lost is
        recovered after its lease, a finish whose reply was lost is re-sent (stale)."""
        proxy = self.instances[name].proxy
        at, wall = time.monotonic(), time.time()
        proxy.drop_replies(match, count)
        deadline = time.monotonic() + BOUND
        while proxy.drops_left:
            assert time.monotonic() < deadline, "no request to lose the reply of"
            time.sleep(0.02)
        self._record("lost-reply", at, wall, (name,))

    def restart_redis(self) -> None:
        """Restart Redis without persistence: every key is lost."""
        at, wall = time.monotonic(), time.time()
        self.redis.restart()
        self._admin.close()
        self._record("redis-restart", at, wall, explains=True)

    def client_pause(self, ms: int) -> None:
        """``CLIENT PAUSE ms`` (every command of every client waits), until it ends."""
        at, wall = time.monotonic(), time.time()
        self._admin.execute_command("CLIENT", "PAUSE", ms)
        time.sleep(ms / 1000)
        self._record("client-pause", at, wall, explains=self.outlasts_lease(ms / 1000))

    def debug_sleep(self, seconds: float) -> None:
        """``DEBUG SLEEP seconds``: the server does nothing meanwhile."""
        at, wall = time.monotonic(), time.time()
        self._admin.execute_command("DEBUG", "SLEEP", seconds)
        self._record("debug-sleep", at, wall, explains=self.outlasts_lease(seconds))

    def write_garbage(self, writes: Sequence[tuple[str, ...]], jobs: Sequence[str]) -> None:
        """Run raw commands against our keys (``{pfx}`` in them is the hash-tagged prefix);
        the jobs they break may lose occurrences and re-run one."""
        at, wall = time.monotonic(), time.time()
        tag = "{" + self.prefix + "}"
        for command in writes:
            self._admin.execute_command(*(part.replace("{pfx}", tag) for part in command))
        self._record("garbage", at, wall, explains=True, jobs=tuple(jobs))

    # -- the check ---------------------------------------------------------------------------

    def leftovers(self) -> tuple[list[str], list[str]]:
        """Lease keys, and jobs stored as running, left in Redis."""
        client = self.redis.client()
        try:
            tag = "{" + self.prefix + "}"
            leases = sorted(k.decode() for k in client.scan_iter(f"{tag}:lease:*"))
            running = []
            for key in client.scan_iter(f"{tag}:job:*"):
                if client.type(key) == b"hash" and client.hget(key, "status") == b"running":
                    running.append(key.decode().split(":job:", 1)[1])
            return leases, sorted(running)
        finally:
            client.close()

    def check(self, jobs: Sequence[JobSpec], window: tuple[float, float], *,
              gaps: Sequence[Gap] = (), graceful: bool = True, **options: Any) -> Scenario:
        """Stop every instance, then run the checker over everything and assert it passed.

        :param window: wall seconds; every occurrence scheduled in it must have started (it
            starts no earlier than the first instance was ready: before that, the jobs were
            not registered, and a slow start on a loaded machine must not count as a miss).
        :param options: more :class:`~tests.faults.checker.Scenario` fields.
        :returns: the scenario checked, for more assertions.
        """
        self.stop_all()
        leases, running = self.leftovers() if graceful else ([], [])
        events = self.events()
        first_ready = min(e["wall"] for e in events if e["event"] == "ready")
        window = (max(window[0], first_ready), window[1])
        faults = list(self.faults)
        for e in events:  # a handler that held the GIL froze its whole process
            if e["event"] == "pause":
                length = e["end"] - e["start"]
                faults.append(Fault(e["why"], e["start"], e["end"], e["wall"] - length,
                                    e["wall"], (e["instance"],), freezes=True,
                                    explains=self.outlasts_lease(length)))
        scenario = Scenario(jobs=list(jobs), lock_ttl=self.lock_ttl, window=window,
                            faults=faults, gaps=list(gaps), graceful=graceful,
                            leftover_leases=leases, running_jobs=running, **options)
        client = self.sink.client()
        try:
            sink = read_log(client)
        finally:
            client.close()
        violations = check(events, sink, scenario)
        assert not violations, _report(violations, scenario, self.directory)
        return scenario

    def runs(self) -> list[Any]:
        return runs_of(self.events())


def _report(violations: list[str], scenario: Scenario, directory: Path) -> str:
    faults = "\n".join(f"  {f}" for f in scenario.faults) or "  none"
    shown = "\n".join(f"- {v}" for v in violations[:25])
    more = f"\n... and {len(violations) - 25} more" if len(violations) > 25 else ""
    return (f"{len(violations)} violation(s):\n{shown}{more}\nfaults injected:\n{faults}\n"
            f"histories in {directory}")
