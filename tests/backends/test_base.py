"""The Backend protocol's own parts: its default finish_and_claim, and the check that a
backend given to a Scheduler has the whole contract."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pyscheduler import (
    ConfigError,
    Job,
    MemoryBackend,
    OnceSchedule,
    Scheduler,
    SchedulerConfig,
)
from pyscheduler.backends.base import Backend, ClaimBatch

from ..helpers import START, WAIT, Recorder


class TwoCallBackend(MemoryBackend):
    """A backend that inherits Backend's default finish_and_claim instead of its own."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: list[str] = []

    def finish(self, outcomes: Any) -> Any:
        self.calls.append("finish")
        return super().finish(outcomes)

    def claim(self, *args: Any) -> ClaimBatch:
        self.calls.append("claim")
        return super().claim(*args)

    def finish_and_claim(self, *args: Any) -> Any:
        self.calls.append("finish_and_claim")
        return Backend.finish_and_claim(self, *args)


def test_the_default_finish_and_claim_finishes_then_claims(fake_clock):
    backend = TwoCallBackend(fake_clock)
    recorder = Recorder()
    # One worker: the one that finishes "a" records it and claims "b" in one go.
    scheduler = Scheduler(backend, config=SchedulerConfig(max_concurrent=1), clock=fake_clock)
    scheduler.register(Job("a", OnceSchedule(START), recorder))
    scheduler.register(Job("b", OnceSchedule(START), recorder))
    with scheduler:
        deadline = time.monotonic() + WAIT
        while len(recorder.calls) < 2:
            assert time.monotonic() < deadline, "the jobs never ran"
            time.sleep(0.005)
        assert scheduler.wait_idle(WAIT)
    combined = backend.calls.index("finish_and_claim")
    assert backend.calls[combined + 1:combined + 3] == ["finish", "claim"]


class PartialBackend:
    """A backend written against an older contract: no finish_and_claim."""

    def __getattr__(self, name: str) -> Any:
        if name == "finish_and_claim":
            raise AttributeError(name)
        return getattr(MemoryBackend(), name)


def test_a_backend_missing_part_of_the_contract_is_refused_by_name():
    with pytest.raises(ConfigError, match="PartialBackend lacks finish_and_claim"):
        Scheduler(PartialBackend())  # type: ignore[arg-type]
