"""DistributedLock: claiming occurrences and keeping their leases alive until they finish.

The lock is a per-occurrence lease, not a mutex on the job name: a lease is a *liveness*
hint that lets another instance recover an occurrence whose holder died, and exclusivity
comes from the backend's compare-and-set on the occurrence plus the fencing token.

One refresher thread extends every lease this instance holds in one backend call per
``lock_refresh_interval``. Each lease also has a local deadline counted from when the last
successful claim or refresh was *sent* (the backend starts the TTL no earlier), cut short by a
margin for clock-rate drift. When it passes without a refresh, the job's token is cancelled
and ``lock_lost`` reported. A watchdog thread of its own keeps those deadlines: the refresher
may sit in a backend call for as long as the network lets it (a black-holed connection
answers only when the client's socket timeout runs out, and then it retries), and the
cancellation must not wait for that.

A lease whose run has returned is *finishing* from the moment its outcome is handed to the
backend: a refresh that finds it released meanwhile (by that very finish) is not a loss.

The refresher thread also sends this instance's heartbeat (:meth:`DistributedLock.announce`):
one backend call per interval, right after the lease refresh, recording the instance as live
for one lease TTL. A heartbeat that fails is logged and sent again an interval later; it never
delays a lease refresh's retry nor touches the deadlines.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .backends.base import (
    Backend,
    ClaimBatch,
    ClaimRequest,
    InstanceInfo,
    JobState,
    Lease,
    Outcome,
)
from .clock import Clock, SystemClock
from .context import CancellationToken
from .observability import Logger, MetricsCollector, NoOpMetrics, SafeHooks, StandardLogger

__all__ = ["DistributedLock"]

#: Local deadlines are cut short by this fraction of the TTL, for clock-rate differences
#: between this host and the backend (Redlock's drift factor, generously) ...
_DRIFT = 0.01
#: ... and by at least this many seconds, for the watchdog's own wake-up latency.
_MIN_MARGIN = 0.1


@dataclass(eq=False)
class _Held:
    lease: Lease
    token: CancellationToken
    deadline: float  # monotonic
    lost: bool = False
    finishing: bool = False  # its outcome is on its way to the backend


class DistributedLock:
    """Claims occurrences through a backend and keeps their leases alive.

    :param backend: the shared :class:`~pyscheduler.backends.base.Backend`.
    :param logger: where lease events are logged.
    :param metrics: told ``lock_acquired``, ``lock_contended`` and ``lock_lost``.
    """

    def __init__(
        self,
        backend: Backend,
        logger: Optional[Logger] = None,
        metrics: Optional[MetricsCollector] = None,
        *,
        clock: Optional[Clock] = None,
    ) -> None:
        self.backend = backend
        self._hooks = SafeHooks(logger or StandardLogger(), metrics or NoOpMetrics())
        self._clock: Clock = clock or SystemClock()
        self._held: dict[str, _Held] = {}  # by owner token
        self._mutex = threading.Lock()
        self._ttl = 30.0
        self._interval = 10.0
        self._last_refresh = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._watchdog: Optional[threading.Thread] = None
        self._describe: Optional[Callable[[], Optional[InstanceInfo]]] = None
        self._on_live: Optional[Callable[[list[InstanceInfo]], None]] = None
        self._beat_soon = False
        self._last_heartbeat = 0.0

    def bind_log_fields(self, **fields: object) -> None:
        """Name ``fields`` in every message this part logs from now on: the scheduler binds
        its ``instance`` at each start (see :meth:`SafeHooks.bind`)."""
        self._hooks.bind(**fields)

    # -- claiming ----------------------------------------------------------------------------

    def acquire(
        self, instance_id: str, requests: Sequence[ClaimRequest], peek: int
    ) -> tuple[ClaimBatch, float]:
        """Claim a batch of occurrences.

        :returns: the backend's answer and the monotonic time the request was sent, from which
            the new leases' local deadlines count (pass it to :meth:`hold`).
        """
        sent = self._clock.monotonic()
        batch = self.backend.claim(instance_id, requests, self._lease_ms(), peek)
        self._acquired(batch)
        return batch, sent

    def finish_and_acquire(
        self, outcomes: Sequence[Outcome], instance_id: str, requests: Sequence[ClaimRequest],
        peek: int,
    ) -> tuple[list[Optional[JobState]], ClaimBatch, float]:
        """:meth:`finish` then :meth:`acquire`, in one backend call where the backend can
        (:meth:`~pyscheduler.backends.base.Backend.finish_and_claim`)."""
        if not outcomes:
            return ([], *self.acquire(instance_id, requests, peek))
        sent = self._clock.monotonic()
        self._finishing(outcomes, True)
        try:
            states, batch = self.backend.finish_and_claim(outcomes, instance_id, requests,
                                                          self._lease_ms(), peek)
        except BaseException:
            self._finishing(outcomes, False)
            raise
        self._finished(outcomes, states)
        self._acquired(batch)
        return states, batch, sent

    def _acquired(self, batch: ClaimBatch) -> None:
        for claim in batch.claims:
            self._hooks.metric("lock_acquired", claim.job_name)
        for entry in batch.refused:
            if entry.due_ms is not None:
                self._hooks.metric("lock_contended", entry.name)

    def hold(self, lease: Lease, token: CancellationToken, sent: float) -> None:
        """Keep ``lease`` alive until :meth:`finish` or :meth:`interrupt`; cancel ``token``
        if it is lost."""
        # No need to wake the refresher: it refreshes every interval, which is shorter than
        # a new lease's deadline.
        with self._mutex:
            self._held[lease.owner] = _Held(lease, token, self._deadline(sent))

    # -- giving leases up --------------------------------------------------------------------

    def finish(self, outcomes: Sequence[Outcome]) -> list[Optional[JobState]]:
        """Record outcomes and stop refreshing their leases.

        :returns: per outcome, the job's new state, or ``None`` when the backend rejected it
            as stale (another owner took the occurrence over); that is logged here.
        """
        self._finishing(outcomes, True)
        try:
            states = self.backend.finish(outcomes)
        except BaseException:
            self._finishing(outcomes, False)  # not recorded: still ours to keep alive
            raise
        self._finished(outcomes, states)
        return states

    def _finishing(self, outcomes: Sequence[Outcome], finishing: bool) -> None:
        with self._mutex:
            for outcome in outcomes:
                entry = self._held.get(outcome.lease.owner)
                if entry is not None:
                    entry.finishing = finishing

    def _finished(self, outcomes: Sequence[Outcome], states: Sequence[Optional[JobState]]) -> None:
        with self._mutex:
            for outcome in outcomes:
                self._held.pop(outcome.lease.owner, None)
        for outcome, state in zip(outcomes, states):
            if state is None:
                self._hooks.log("warning", "stale completion dropped: the occurrence was taken "
                                "over or removed", job=outcome.lease.job_name,
                                fence=outcome.lease.fence)

    def lost(self, lease: Lease) -> bool:
        """Whether ``lease``, still held here, was declared lost."""
        with self._mutex:
            entry = self._held.get(lease.owner)
            return entry is not None and entry.lost

    def forget(self, lease: Lease) -> None:
        """Stop keeping ``lease`` (lost: nothing to tell the backend, it runs out there)."""
        with self._mutex:
            self._held.pop(lease.owner, None)

    def interrupt(self, leases: Sequence[Lease]) -> None:
        """Give up running occurrences (at shutdown) so that another instance recovers them."""
        if not leases:
            return
        with self._mutex:
            for lease in leases:
                self._held.pop(lease.owner, None)
        self.backend.interrupt(leases)

    # -- refreshing --------------------------------------------------------------------------

    def configure(self, lock_ttl: float, refresh_interval: float, clock: Clock) -> None:
        """Set the lease TTL, the refresh period (seconds) and the clock, before any claim."""
        self._ttl, self._interval, self._clock = lock_ttl, refresh_interval, clock
        self._last_refresh = clock.monotonic()

    def refresh_due(self) -> float:
        """One step of the refresher: cancel leases past their local deadline, refresh all
        leases if the interval has passed.

        :returns: seconds until the next step is needed.
        """
        now = self._clock.monotonic()
        self.expire_overdue(now)
        if now - self._last_refresh >= self._interval:
            self.refresh()
            now = self._clock.monotonic()
        return self._next_step(now)

    def refresh(self) -> None:
        """Extend every held lease in one backend call, now."""
        self._last_refresh = self._clock.monotonic()
        with self._mutex:
            held = self._alive()
        if not held:
            return
        sent = self._clock.monotonic()
        results = self.backend.refresh([h.lease for h in held], self._lease_ms())
        deadline = self._deadline(sent)
        for entry, still_held in zip(held, results):
            if still_held:
                entry.deadline = max(entry.deadline, deadline)
            else:
                self._lose([entry], "the lease expired or was taken over")

    def expire_overdue(self, now: float) -> None:
        """Cancel the runs whose lease is past its local deadline (the watchdog's step)."""
        with self._mutex:
            overdue = [h for h in self._alive() if h.deadline <= now]
        self._lose(overdue, "no successful refresh before the lease's deadline")

    def _alive(self) -> list[_Held]:
        """The leases still to keep alive (call with the mutex held): not lost, and not
        finishing — a finish that lands late is judged by the backend's fence instead."""
        return [h for h in self._held.values() if not h.lost and not h.finishing]

    def _earliest_deadline(self) -> Optional[float]:
        with self._mutex:
            return min((h.deadline for h in self._alive()), default=None)

    def _lose(self, entries: Sequence[_Held], why: str) -> None:
        with self._mutex:
            # Skipped: a run whose outcome was sent (or recorded) meanwhile — its own finish
            # released the lease, which is no loss — and one the other thread declared lost.
            lost = [h for h in entries
                    if self._held.get(h.lease.owner) is h and not h.lost and not h.finishing]
            for entry in lost:
                entry.lost = True
        for entry in lost:
            entry.token.cancel(f"lease lost: {why}")
            self._hooks.metric("lock_lost", entry.lease.job_name)
            self._hooks.log("warning", "lease lost; the run is cancelled",
                            job=entry.lease.job_name, fence=entry.lease.fence, reason=why)

    def _next_step(self, now: float) -> float:
        wake = self._last_refresh + self._interval
        earliest = self._earliest_deadline()
        if earliest is not None:
            wake = min(wake, earliest)
        return max(0.0, wake - now)

    def _deadline(self, sent: float) -> float:
        return sent + self._ttl - max(self._ttl * _DRIFT, _MIN_MARGIN)

    def _lease_ms(self) -> int:
        return int(self._ttl * 1000)

    # -- heartbeats ----------------------------------------------------------------------------

    def announce(self, describe: Optional[Callable[[], Optional[InstanceInfo]]],
                 on_live: Optional[Callable[[list[InstanceInfo]], None]] = None) -> None:
        """Heartbeat ``describe()`` every refresh interval from now on (``None``: stop), and
        hand each answer, the live instances, to ``on_live``.

        Each heartbeat records the instance as live for one lease TTL, so that a crashed
        instance's record expires about when its leases do; ``describe`` returning ``None``
        skips that beat (a forked copy must not beat for its parent). The first beat is the
        caller's: :meth:`heartbeat`, once configured.
        """
        self._describe, self._on_live = describe, on_live
        self._last_heartbeat = self._clock.monotonic()

    def heartbeat(self) -> Optional[list[InstanceInfo]]:
        """Send one heartbeat now (one backend call).

        :returns: the live instances, or ``None`` when there is nothing to announce.
        :raises NotImplementedError: the backend does not keep live instances; or what the
            backend raises otherwise.
        """
        self._last_heartbeat = self._clock.monotonic()
        describe = self._describe
        info = None if describe is None else describe()
        if info is None:
            return None
        live = self.backend.heartbeat(info, self._lease_ms())
        on_live = self._on_live
        if on_live is not None:
            on_live(live)
        return live

    def heartbeat_soon(self) -> None:
        """Send the next heartbeat at once rather than an interval after the last: the live
        instances changed, and its answer tells how."""
        self._beat_soon = True
        self._wake.set()

    def heartbeat_due(self) -> float:
        """One heartbeat step: send one if an interval has passed since the last. It never
        raises: a failure is logged, and the next interval tries again.

        :returns: seconds until the next step is needed.
        """
        if self._describe is None:
            return self._interval
        if self._beat_soon or self._clock.monotonic() - self._last_heartbeat >= self._interval:
            self._beat_soon = False
            try:
                self.heartbeat()
            except Exception:
                self._hooks.log("error", "heartbeat failed; the next refresh interval tries "
                                "again", traceback=traceback.format_exc(limit=3))
        return max(0.0, self._last_heartbeat + self._interval - self._clock.monotonic())

    # -- the refresher thread ----------------------------------------------------------------

    def start_refresher(self) -> None:
        """Start the refresher and watchdog threads."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresh_loop, name="pyscheduler-refresher",
                                        daemon=True)
        self._watchdog = threading.Thread(target=self._watch_loop,
                                          name="pyscheduler-lease-watchdog", daemon=True)
        self._thread.start()
        self._watchdog.start()

    def stop_refresher(self, timeout: float = 5.0) -> None:
        """Stop and join the refresher and watchdog threads."""
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._watchdog):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._watchdog = None

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.expire_overdue(self._clock.monotonic())
            except Exception:  # a hook that raised: keep watching
                self._hooks.log("error", "the lease watchdog failed; continuing",
                                traceback=traceback.format_exc(limit=3))
            earliest = self._earliest_deadline()
            # No wake-up when a lease is taken: a new lease's deadline (sent + TTL) is never
            # before those already held, and with none held the next one is at least a TTL
            # away, longer than the refresh interval waited here.
            delay = (min(self._interval, self._ttl / 2) if earliest is None
                     else earliest - self._clock.monotonic())
            self._clock.wait(self._stop, max(0.0, delay))

    def _refresh_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delay = self.refresh_due()
                failures = 0
            except Exception:
                failures += 1
                # Retry soon, with a backoff; the watchdog keeps the local deadlines meanwhile.
                delay = min(0.05 * 2**min(failures, 6), self._next_step(self._clock.monotonic()))
                self._hooks.log("error", "lease refresh failed; retrying",
                                traceback=traceback.format_exc(limit=3))
            if self._stop.is_set():
                break
            # After the leases (never holding up their refresh), and whatever became of it.
            delay = min(delay, self.heartbeat_due())
            if self._stop.is_set():
                break
            self._clock.wait(self._wake, delay)
