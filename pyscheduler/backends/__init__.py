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
    from .redis import RedisBackend

    if config.redis_url:
        # redis-py parses the URL itself, so rediss://, unix:// and ACL users all work.
        return RedisBackend.from_url(config.redis_url, key_prefix=config.key_prefix,
                                     cluster=config.redis_cluster,
                                     partitions=config.partitions)
    return RedisBackend.from_address(config.redis_addr, password=config.redis_password,
                                     db=config.redis_db, key_prefix=config.key_prefix,
                                     cluster=config.redis_cluster,
                                     partitions=config.partitions)


def __getattr__(name: str) -> object:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
