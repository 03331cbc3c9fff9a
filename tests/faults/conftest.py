"""Fixtures of the fault suite: a :class:`~tests.faults.harness.Cluster` per test, and the
repetitions asked for by ``PYSCHEDULER_FAULT_RUNS`` (``make faults`` sets 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.redis_server import RedisServer

from .harness import RUNS, Cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "repetition" in metafunc.fixturenames:
        metafunc.parametrize("repetition", range(RUNS), ids=lambda n: f"run{n + 1}")


@pytest.fixture
def make_cluster(redis_server_factory: Callable[..., RedisServer],
                 tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(lock_ttl=..., refresh=..., tick=...)``: a Redis, a sink, no instances
    yet; every process is killed and every proxy closed at teardown."""
    made: list[Cluster] = []

    def make(**settings: float) -> Cluster:
        cluster = Cluster(tmp_path, redis_server_factory, **settings)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
