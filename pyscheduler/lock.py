"""DistributedLock: claiming occurrences and keeping their leases alive until they finish.

The lock is a per-occurrence lease, not a mutex on the job name: a lease is a *liveness*
hint that lets another instance recover an occurrence whose holder died, and exclusivity
comes from the backend's compare-and-set on the occurrence plus the fencing token.

One refresher thread extends every lease this instance holds in one backend call per
``lock_refresh_interval``. Each lease also has a local deadline counted from when the last
successful claim or refresh was *sent*: when it passes without a refresh, the job's token is
cancelled and ``lock_lost`` reported at once, without waiting for the backend to answer.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import Optional, Sequence

from .backends.base import Backend, ClaimBatch, ClaimRequest, JobState, Lease, Outcome
from .clock import Clock, SystemClock
from .context import CancellationToken
from .observability import Logger, MetricsCollector, NoOpMetrics, SafeHooks, StandardLogger

__all__ = ["DistributedLock"]

#: Local deadlines are cut short by this fraction of the TTL, for clock-rate differences
#: between this host and the backend (Redlock's drift factor, generously).
_DRIFT = 0.01


@dataclass(eq=False)
class _Held:
    lease: Lease
    token: CancellationToken
    deadline: float  # monotonic
    lost: bool = False


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
        """:meth:`finish` then :meth:`acquire`, in one backend call where the backend offers
        ``finish_and_claim`` (see :mod:`pyscheduler.backends.base`)."""
        combined = getattr(self.backend, "finish_and_claim", None)
        if combined is None or not outcomes:
            states = self.finish(outcomes) if outcomes else []
            return (states, *self.acquire(instance_id, requests, peek))
        sent = self._clock.monotonic()
        states, batch = combined(outcomes, instance_id, requests, self._lease_ms(), peek)
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
        states = self.backend.finish(outcomes)
        self._finished(outcomes, states)
        return states

    def _finished(self, outcomes: Sequence[Outcome], states: Sequence[Optional[JobState]]) -> None:
        with self._mutex:
            for outcome in outcomes:
                self._held.pop(outcome.lease.owner, None)
        for outcome, state in zip(outcomes, states):
            if state is None:
                self._hooks.log("warning", "stale completion dropped: the occurrence was taken "
                                "over or removed", job=outcome.lease.job_name,
                                fence=outcome.lease.fence)

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
        self._expire_local(now)
        if now - self._last_refresh >= self._interval:
            self.refresh()
            now = self._clock.monotonic()
        return self._next_step(now)

    def refresh(self) -> None:
        """Extend every held lease in one backend call, now."""
        self._last_refresh = self._clock.monotonic()
        with self._mutex:
            held = [h for h in self._held.values() if not h.lost]
        if not held:
            return
        sent = self._clock.monotonic()
        results = self.backend.refresh([h.lease for h in held], self._lease_ms())
        deadline = self._deadline(sent)
        for entry, still_held in zip(held, results):
            if still_held:
                entry.deadline = max(entry.deadline, deadline)
            else:
                self._lose(entry, "the lease expired or was taken over")

    def _expire_local(self, now: float) -> None:
        with self._mutex:
            overdue = [h for h in self._held.values() if not h.lost and h.deadline <= now]
        for entry in overdue:
            self._lose(entry, "no successful refresh before the lease's deadline")

    def _lose(self, entry: _Held, why: str) -> None:
        entry.lost = True
        entry.token.cancel(f"lease lost: {why}")
        self._hooks.metric("lock_lost", entry.lease.job_name)
        self._hooks.log("warning", "lease lost; the run is cancelled", job=entry.lease.job_name,
                        fence=entry.lease.fence, reason=why)

    def _next_step(self, now: float) -> float:
        with self._mutex:
            deadlines = [h.deadline for h in self._held.values() if not h.lost]
        wake = self._last_refresh + self._interval
        if deadlines:
            wake = min(wake, min(deadlines))
        return max(0.0, wake - now)

    def _deadline(self, sent: float) -> float:
        return sent + self._ttl * (1 - _DRIFT)

    def _lease_ms(self) -> int:
        return int(self._ttl * 1000)

    # -- the refresher thread ----------------------------------------------------------------

    def start_refresher(self) -> None:
        """Start the refresher thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresh_loop, name="pyscheduler-refresher",
                                        daemon=True)
        self._thread.start()

    def stop_refresher(self, timeout: float = 5.0) -> None:
        """Stop and join the refresher thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _refresh_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delay = self.refresh_due()
                failures = 0
            except Exception:
                failures += 1
                # Retry soon, and never sleep past a local deadline: those still cancel
                # runs while the backend is unreachable.
                delay = min(0.05 * 2**min(failures, 6), self._next_step(self._clock.monotonic()))
                self._hooks.log("error", "lease refresh failed; retrying",
                                traceback=traceback.format_exc(limit=3))
            if self._stop.is_set():
                break
            self._clock.wait(self._wake, delay)
