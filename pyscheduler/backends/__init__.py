"""Backends: where the schedulers of a group share job state (see :mod:`.base`).

``MemoryBackend`` is the embedded default. ``RedisBackend`` is imported lazily, so that
``import pyscheduler`` does not import redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend
from .memory import MemoryBackend

if TYPE_CHECKING:
    from ..config import SchedulerConfig

__all__ = ["Backend", "MemoryBackend", "RedisBackend", "redis_backend_from_config"]


def redis_backend_from_config(config: SchedulerConfig) -> Backend:
    """Build a Redis backend (and the client it owns) from a config."""
    raise NotImplementedError("the Redis backend is not available yet")


def __getattr__(name: str) -> object:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
