"""Presence: this instance's record among the group's live instances.

A started scheduler announces itself (:class:`~pyscheduler.backends.base.InstanceInfo`) at
start; the lease refresher's thread then sends the record again every
``lock_refresh_interval`` (:meth:`~pyscheduler.lock.DistributedLock.heartbeat_due`), with the
jobs running here, and hands each answer (the live instances) to ``on_live``, which decides
who owns which job (:mod:`~pyscheduler.ownership`); ``stop()`` removes it, and a crashed
instance's record expires ``lock_ttl`` after its last heartbeat. A backend that does not
keep live instances runs the jobs all the same, with one warning.
"""

from __future__ import annotations

import os
import socket
import traceback
from dataclasses import replace
from typing import Callable, Optional

from .backends.base import Backend, InstanceInfo
from .executor import DefaultJobExecutor
from .lock import DistributedLock
from .observability import SafeHooks

__all__ = ["Presence"]


class Presence:
    """Announces this instance, describes it for each heartbeat, and withdraws it."""

    def __init__(self, backend: Backend, lock: DistributedLock, executor: DefaultJobExecutor,
                 hooks: SafeHooks,
                 on_live: Optional[Callable[[list[InstanceInfo]], None]] = None,
                 jobs_digest: Callable[[], str] = str) -> None:
        self._backend, self._lock, self._executor, self._hooks = backend, lock, executor, hooks
        self._on_live, self._jobs_digest = on_live, jobs_digest
        self._announced: Optional[InstanceInfo] = None  # what stays the same between beats

    @property
    def announced(self) -> bool:
        """Whether the backend keeps this instance's record."""
        return self._announced is not None

    def announce(self, instance_id: str, started_at_ms: int, max_concurrent: int) -> None:
        """Send the first heartbeat (the lease refresher sends the others)."""
        self._announced = None
        if callable(getattr(self._backend, "heartbeat", None)):
            self._announced = InstanceInfo(instance_id, socket.gethostname(), os.getpid(),
                                           started_at_ms, _library_version(), max_concurrent)
            self._lock.announce(self.describe, self._on_live)
            try:
                self._lock.heartbeat()
                return
            except NotImplementedError:
                self._announced = None
                self._lock.announce(None)
            except Exception:
                self._hooks.log("error", "the first heartbeat failed; sent again every "
                                "lock_refresh_interval", instance=instance_id,
                                traceback=traceback.format_exc(limit=3))
                return
        self._hooks.log("warning", "live instances are unavailable on this backend: it does "
                        "not implement heartbeat(); the jobs run all the same",
                        backend=type(self._backend).__name__, instance=instance_id)

    def describe(self) -> Optional[InstanceInfo]:
        """This instance's record as of now, or ``None`` in a forked copy (the record is its
        parent's)."""
        announced = self._announced
        if announced is None or announced.pid != os.getpid():
            return None
        return replace(announced, running=tuple(self._executor.running_names()),
                       jobs_digest=self._jobs_digest())

    def leave(self, instance_id: str) -> None:
        """Stop heartbeating and remove the record (best effort: it expires anyway)."""
        self._lock.announce(None)
        if self._announced is None:
            return
        try:
            self._backend.leave(instance_id)
        except Exception:
            self._hooks.log("error", "could not remove this instance's record while stopping; "
                            "it expires within lock_ttl", instance=instance_id,
                            traceback=traceback.format_exc(limit=3))


def _library_version() -> str:
    from . import __version__  # here: pyscheduler/__init__.py imports this module first

    return __version__
