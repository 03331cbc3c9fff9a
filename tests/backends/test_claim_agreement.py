"""The claim rules agree on both sides: Python (:mod:`pyscheduler.backends.claim_rules`, which
MemoryBackend applies) and Lua (RedisBackend's scripts, which implement the same tree).

Each scenario drives a MemoryBackend and a RedisBackend on a real redis-server through the
same steps, and every stored field is compared: what each call returned (claims, refusals,
skipped and abandoned jobs, states), the job's :class:`JobState` after each step, and the run
history at the end. A divergence names its scenario and the field.

Time: both sides read one :class:`FakeClock`. The memory backend is given it; on Redis the
scripts' ``server_now`` (the one place they read ``TIME``, in ``common.lua``) is replaced, in
the text loaded here only, by a read of the fake time from a key, so that both decide at the
same instants. Everything else in the scripts runs as shipped. (The contract suite waits for
Redis's real clock instead, which only lets a short lease run out; comparing every time field
needs the same instants on both sides.) Fences are floored at the clock in microseconds and
the memory backend's also above every fence it handed out, so they are compared by their
order within the scenario, not by value.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional

import pytest

import pyscheduler.backends.redis as redis_module
from pyscheduler.backends.base import (
    Backend,
    ClaimBatch,
    ClaimRequest,
    DueEntry,
    JobDefinition,
    JobState,
    Lease,
    Outcome,
)
from pyscheduler.backends.memory import MemoryBackend
from pyscheduler.clock import FakeClock

pytestmark = pytest.mark.redis

LONG = 60_000
HOUR = 3_600_000
JOB = "job"
#: where the replaced ``server_now`` reads the test's time (in the group's hash tag)
NOW_KEY = "{agreement}:test-now"

_SERVER_NOW = """local function server_now()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return sec * 1000 + math.floor(usec / 1000), sec * 1000000 + usec
end"""
_FAKE_NOW = f"""local function server_now()
  local ms, us = unpack(redis.call('HMGET', '{NOW_KEY}', 'ms', 'us'))
  return tonumber(ms), tonumber(us)
end"""


# -- the two sides ----------------------------------------------------------------------------


class Side:
    """One backend driven through a scenario, recording what every step answered."""

    def __init__(self, backend: Backend, clock: FakeClock,
                 publish_time: Callable[[], None] = lambda: None) -> None:
        self.backend = backend
        self.clock = clock
        self._publish_time = publish_time
        self.steps: list[tuple[str, object]] = []
        publish_time()

    def now(self) -> int:
        return int(self.clock.time() * 1000)

    def advance(self, ms: int) -> None:
        self.clock.advance(timedelta(milliseconds=ms))
        self._publish_time()

    def _record(self, label: str, answer: object) -> Any:
        (state,) = self.backend.get_states([JOB])
        self.steps.append((label, answer))
        self.steps.append((f"{label} -> state", state))
        return answer

    def state(self) -> JobState:
        (state,) = self.backend.get_states([JOB])
        assert state is not None
        return state

    # the calls of the contract, each recorded with the job's state after it

    def register(self, first_run_ms: Optional[int], **kwargs: Any) -> list[JobState]:
        return self._record("register", self.backend.register(
            [JobDefinition(JOB, first_run_ms, {"schedule": "every 1h"}, **kwargs)]))

    def claim(self, *requests: ClaimRequest, lease_ms: int = LONG) -> ClaimBatch:
        return self._record("claim", self.backend.claim("instance", list(requests), lease_ms,
                                                        0))

    def finish(self, *outcomes: Outcome) -> list[Optional[JobState]]:
        # Redis answers a finish without the description (the contract allows it); the
        # description is compared in every state read afterwards.
        states = [None if state is None else dataclasses.replace(state, description={})
                  for state in self.backend.finish(list(outcomes))]
        return self._record("finish", states)

    def interrupt(self, *leases: Lease) -> list[bool]:
        return self._record("interrupt", self.backend.interrupt(list(leases)))

    def run_now(self) -> DueEntry:
        return self._record("run_now", self.backend.run_now(JOB))

    def pause(self) -> DueEntry:
        return self._record("pause", self.backend.pause(JOB))

    def resume(self) -> DueEntry:
        return self._record("resume", self.backend.resume(JOB))

    # requests, from this side's own stored state

    def regular(self, owner: str, *, scheduled: Optional[int] = None,
                following: Any = "hour later", **kwargs: Any) -> ClaimRequest:
        state = self.state()
        assert state.next_run_ms is not None and state.due_ms is not None
        scheduled = state.next_run_ms if scheduled is None else scheduled
        return ClaimRequest(JOB, owner, state.due_ms, state.next_run_ms, scheduled,
                            scheduled + HOUR if following == "hour later" else following,
                            **kwargs)

    def again(self, owner: str, **kwargs: Any) -> ClaimRequest:
        """A request for whatever is due (a retry, a recovery, a run_now)."""
        state = self.state()
        assert state.due_ms is not None
        return ClaimRequest(JOB, owner, state.due_ms, state.next_run_ms, None, None, **kwargs)

    def claimed(self, batch: ClaimBatch) -> Lease:
        """The lease of the claim the scenario expects; if there is none, one that owns
        nothing, so that the scenario goes on and the comparison names what differs."""
        if len(batch.claims) != 1:
            return Lease(JOB, "no claim", 0)
        (claim,) = batch.claims
        return Lease(claim.job_name, claim.owner, claim.fence)


# -- the scenarios ----------------------------------------------------------------------------


def regular_claim(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1")))
    side.finish(Outcome(lease, True, duration=0.25, history_limit=10))


def coalesced_misses(side: Side) -> None:
    # The latest of several missed occurrences is claimed; they coalesce into it.
    side.register(side.now() - 50_000)
    state = side.state()
    assert state.next_run_ms is not None
    lease = side.claimed(side.claim(side.regular("o1", scheduled=state.next_run_ms + 40_000,
                                                 following=state.next_run_ms + 60_000)))
    side.finish(Outcome(lease, True, history_limit=10))


def one_time_job(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1", following=None)))
    side.finish(Outcome(lease, True, history_limit=10))


def refused_claims(side: Side) -> None:
    side.register(side.now() + 5_000)
    side.claim(side.regular("early", scheduled=side.now()))  # not yet due
    side.advance(5_000)
    request = side.regular("stale")
    side.claim(dataclasses.replace(request, expected_due_ms=request.expected_due_ms - 1))
    side.claim(dataclasses.replace(request, expected_next_run_ms=0))
    side.claim(dataclasses.replace(request, following_ms=request.scheduled_ms))
    side.claim(dataclasses.replace(request, scheduled_ms=side.now() + 1))
    side.claim(request)
    side.claim(side.regular("second"))  # held by the first


def misfire_skip(side: Side) -> None:
    side.register(side.now() - 10_000)
    side.claim(side.regular("late", following=side.now() + 1_000, misfire_grace_ms=5_000))
    side.advance(6_000)  # exactly the grace late: still run
    lease = side.claimed(side.claim(side.regular("in-grace", misfire_grace_ms=5_000)))
    side.finish(Outcome(lease, True, history_limit=10))


def retry_after_a_failure(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1")))
    side.finish(Outcome(lease, False, "boom", 0.5, retry_delay_ms=5_000, history_limit=10))
    side.claim(side.again("too-early"))
    side.advance(5_000)
    lease = side.claimed(side.claim(side.again("o2")))
    side.finish(Outcome(lease, False, "", 0.1, retry_delay_ms=0, timed_out=True,
                        history_limit=10))
    lease = side.claimed(side.claim(side.again("o3")))
    side.finish(Outcome(lease, True, duration=0.1, history_limit=10))


def retry_of_a_handler_still_running(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1"), lease_ms=30_000))
    side.advance(2_000)
    side.finish(Outcome(lease, False, "timed out", 2.0, retry_delay_ms=1_000,
                        still_running=True, timed_out=True, history_limit=10))
    side.advance(28_000)
    side.claimed(side.claim(side.again("o2")))


def failure_settles(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1", following=side.now() + 1_000)))
    side.finish(Outcome(lease, False, "boom", 0.5, history_limit=10))
    side.advance(1_000)
    lease = side.claimed(side.claim(side.regular("o2", following=side.now() + 1_000)))
    side.finish(Outcome(lease, False, "", 0.5, history_limit=10))  # keeps the last error
    side.advance(1_000)
    lease = side.claimed(side.claim(side.regular("o3")))
    side.finish(Outcome(lease, True, duration=0.5, history_limit=10))


def long_error_in_history(side: Side) -> None:
    # Cut to HISTORY_ERROR_BYTES at a character boundary on both sides.
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1")))
    side.finish(Outcome(lease, False, "x" + "é" * 3_000, 0.5, history_limit=10))


def lone_surrogate_in_an_error(side: Side) -> None:
    # An exception's message may hold one: both store its escape, in the state and history.
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1")))
    side.finish(Outcome(lease, False, "bad \ud800 byte", 0.5, history_limit=10))


def orphan_recovered(side: Side) -> None:
    side.register(side.now() - 1_000)
    side.claim(side.regular("o1"), lease_ms=10_000)
    side.advance(5_000)
    side.claim(side.again("too-early"))  # the lease still runs
    side.advance(5_000)
    lease = side.claimed(side.claim(side.again("o2", max_recoveries=1)))
    side.finish(Outcome(lease, True, duration=0.1, history_limit=10))


def retry_then_orphan(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1")))
    side.finish(Outcome(lease, False, "boom", retry_delay_ms=0, history_limit=10))
    side.claim(side.again("o2"), lease_ms=1_000)
    side.advance(1_000)
    lease = side.claimed(side.claim(side.again("o3", max_recoveries=2)))
    side.finish(Outcome(lease, False, "again", retry_delay_ms=0, history_limit=10))
    side.claimed(side.claim(side.again("o4")))


def interrupted_run_recovered(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1")))
    side.advance(100)
    side.interrupt(lease)
    side.interrupt(lease)  # no longer running: nothing to give up
    lease = side.claimed(side.claim(side.again("o2")))
    side.finish(Outcome(lease, True, history_limit=10))


def recovery_exhausted(side: Side) -> None:
    side.register(side.now() - 1_000)
    side.claim(side.regular("o1", following=side.now() + 5_000), lease_ms=1_000)
    side.advance(1_000)
    side.claim(side.again("o2", max_recoveries=1), lease_ms=1_000)
    side.advance(1_000)
    side.claim(side.again("o3", max_recoveries=1, history_limit=10))  # abandoned, recorded
    side.advance(3_000)
    side.claimed(side.claim(side.regular("o4")))


def recovery_disabled(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1")))
    side.interrupt(lease)
    side.claim(side.again("o2", max_recoveries=0))  # abandoned at once, with no record
    side.finish(Outcome(lease, True))  # stale: changes nothing


def abandonment_in_a_bounded_history(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1", following=side.now() + 1_000)))
    side.finish(Outcome(lease, True, duration=0.2, history_limit=2))
    side.advance(1_000)
    lease = side.claimed(side.claim(side.regular("o2", following=side.now() + 1_000)))
    side.finish(Outcome(lease, False, "boom", 0.3, history_limit=2))
    side.advance(1_000)
    side.claim(side.regular("o3", max_recoveries=0), lease_ms=1_000)
    side.advance(1_000)
    # abandoned: the job keeps it and the failure, the group all three
    side.claim(side.again("o4", max_recoveries=0, history_limit=2))


def run_now_manual(side: Side) -> None:
    side.register(side.now() + HOUR)
    side.run_now()
    side.advance(10)
    side.run_now()  # already pending: keeps the first request's time
    lease = side.claimed(side.claim(side.again("o1")))
    side.finish(Outcome(lease, True, history_limit=10))


def run_now_while_running(side: Side) -> None:
    side.register(side.now() - 1_000)
    lease = side.claimed(side.claim(side.regular("o1", following=side.now() + 500)))
    side.run_now()
    side.finish(Outcome(lease, True, history_limit=10))
    side.advance(1_000)
    lease = side.claimed(side.claim(side.again("o2")))  # manual before the regular run
    side.finish(Outcome(lease, True, history_limit=10))
    side.claimed(side.claim(side.regular("o3")))


def pause_and_resume(side: Side) -> None:
    side.register(side.now() - 1_000)
    request = side.regular("o1")
    side.pause()
    side.claim(request)
    side.resume()
    side.claimed(side.claim(side.regular("o2")))
    side.pause()  # while running: out of the index, the run goes on
    side.resume()


def started_paused(side: Side) -> None:
    side.register(side.now() + HOUR, start_paused=True)
    side.run_now()
    side.resume()
    side.claimed(side.claim(side.again("o1")))


def superseded_definition(side: Side) -> None:
    side.register(side.now() - 1_000, version="s1.a")
    side.register(side.now() + HOUR, version="s1.b")  # same schedule: next run kept
    side.claim(side.regular("old", definition_version="s1.a"))
    lease = side.claimed(side.claim(side.regular("new", definition_version="s1.b")))
    side.finish(Outcome(lease, True))
    side.register(side.now() + 5_000, version="s2.b")  # a new schedule: restarts
    side.claim(side.regular("old-schedule", definition_version="s1.b"))
    side.advance(5_000)
    side.claimed(side.claim(side.regular("any-version")))


def resent_claim(side: Side) -> None:
    side.register(side.now() - 1_000)
    request = side.regular("o1")
    lease = side.claimed(side.claim(request))
    side.advance(10)
    side.claim(request)  # its reply was lost: answered again
    side.finish(Outcome(lease, True))
    side.claim(request)  # still the latest claim, settled or not
    side.claim(side.regular("o2", definition_version="other"))


SCENARIOS = [regular_claim, coalesced_misses, one_time_job, refused_claims, misfire_skip,
             retry_after_a_failure, retry_of_a_handler_still_running, failure_settles,
             long_error_in_history, lone_surrogate_in_an_error, orphan_recovered,
             retry_then_orphan, interrupted_run_recovered, recovery_exhausted, recovery_disabled,
             abandonment_in_a_bounded_history, run_now_manual, run_now_while_running,
             pause_and_resume, started_paused, superseded_definition, resent_claim]


# -- the comparison ---------------------------------------------------------------------------


def fields(value: object, path: str) -> dict[str, object]:
    """``value`` flattened to ``{field path: plain value}``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        flat: dict[str, object] = {}
        for f in dataclasses.fields(value):
            flat.update(fields(getattr(value, f.name), f"{path}.{f.name}"))
        return flat
    if isinstance(value, (list, tuple)):
        flat = {f"{path}.len": len(value)}
        for i, item in enumerate(value):
            flat.update(fields(item, f"{path}[{i}]"))
        return flat
    return {path: value}


def observed(side: Side) -> dict[str, object]:
    """Everything the side answered, with the run history, fences ranked."""
    flat: dict[str, object] = {}
    for number, (label, answer) in enumerate(side.steps):
        flat.update(fields(answer, f"step {number // 2 + 1} {label}"))
    flat.update(fields(side.backend.history(JOB, 50), "history"))
    flat.update(fields(side.backend.history(None, 50), "group history"))
    fences = sorted({v for k, v in flat.items() if k.endswith(".fence") and v})
    rank = {fence: i + 1 for i, fence in enumerate(fences)}
    # 0 means never claimed; any other fence by its order among the scenario's fences.
    return {k: f"#{rank[v]}" if k.endswith(".fence") and v else v for k, v in flat.items()}


def differences(memory: dict[str, object], redis: dict[str, object]) -> list[str]:
    keys = list(memory) + [key for key in redis if key not in memory]
    return [f"{key}: memory {memory.get(key, '<absent>')!r}, redis {redis.get(key, '<absent>')!r}"
            for key in keys if memory.get(key, "<absent>") != redis.get(key, "<absent>")]


@pytest.fixture
def sides(redis_server, monkeypatch) -> Iterator[tuple[Side, Side]]:
    """A memory side and a Redis side, each on its own FakeClock (both at the same start)."""
    assert _SERVER_NOW in redis_module._lua("claim"), "common.lua reads the time otherwise now"

    def lua(name: str, _original: Callable[[str], str] = redis_module._lua) -> str:
        return _original(name).replace(_SERVER_NOW, _FAKE_NOW)

    monkeypatch.setattr(redis_module, "_lua", lua)
    memory_clock, redis_clock = FakeClock(), FakeClock()
    backend = redis_module.RedisBackend.from_url(redis_server.url, key_prefix="agreement")
    backend.open()
    client = redis_server.client()

    def publish_time() -> None:
        now_us = round(redis_clock.time() * 1_000_000)
        client.hset(NOW_KEY, mapping={"ms": int(redis_clock.time() * 1000), "us": now_us})

    monkeypatch.setattr(backend, "now_ms", lambda: int(redis_clock.time() * 1000))
    yield Side(MemoryBackend(memory_clock), memory_clock), Side(backend, redis_clock,
                                                                 publish_time)
    backend.close()
    client.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_memory_and_redis_store_the_same(scenario, sides):
    # Given a MemoryBackend and a RedisBackend at the same instant
    memory, redis = sides
    assert memory.now() == redis.now()
    # When both go through the scenario
    scenario(memory)
    scenario(redis)
    # Then every answer, every stored field after each step, and the history agree
    diverged = differences(observed(memory), observed(redis))
    assert not diverged, f"{scenario.__name__} diverges:\n" + "\n".join(diverged)
