"""Ownership: which live instance claims a job's occurrences on time.

Every instance of a group usually registers the same jobs. If each claimed every occurrence
it saw due, every occurrence would cost one claim per instance, all but one refused: the
group's cost would grow with its size. Instead each job has an *owner* among the live
instances, chosen by rendezvous (highest random weight) hashing of the job's name over their
ids, which every instance computes alike from the same list of live instances (the heartbeat
returns it):

- the owner indexes the job's due times and claims each occurrence on time;
- the others keep the job *parked*: they know it, but do not watch its due times, and take an
  occurrence over only once it is ``takeover_delay`` overdue (its owner crashed, is busy, or
  does not have the job, as during a rolling deploy), which their periodic look at the
  backend's due work finds;
- when the live instances change, about 1/n of the jobs change owner, and the new owners
  read those jobs' states before watching them.

Ownership only decides who *asks* first; the backend's compare-and-set claim still decides
who runs, so two instances that briefly disagree about the live list cost a refused claim,
never a duplicate run.

:class:`Ownership` is the hashing alone; :class:`Owners` is one instance following the group
with it: the live instances its heartbeat hears, the owners it suspects, the jobs it was asked
for whoever owns them, and the jobs removed elsewhere that it parks. The claimer
(:mod:`pyscheduler.claiming`) asks it which peeked occurrences to take.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable

from ._time import from_ms
from .backends.base import Backend, Claim, DueEntry, InstanceInfo, JobState
from .due_index import DueIndex, IndexEntry
from .observability import SafeHooks

__all__ = ["Owners", "Ownership", "jobs_digest"]


def jobs_digest(definitions: Iterable[tuple[str, str]]) -> str:
    """A fingerprint of an instance's jobs, as (name, definition version) pairs.

    Only the instances with the same fingerprint divide those jobs among themselves: during
    a rolling deploy the old instances leave a changed job to the new ones, and a job only
    some of them have must not be owned by one that lacks it. Between two releases each
    side thus claims the jobs it has on time; a job both sides have costs a refused claim.
    """
    digest = hashlib.blake2b(digest_size=12)
    for name, version in sorted(definitions):
        digest.update(f"{name}\0{version}\0".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class Ownership:
    """Rendezvous hashing of job names over the live instances, from one instance's view."""

    def __init__(self, instance_id: str = "") -> None:
        self._me = instance_id
        self._members: tuple[str, ...] = (instance_id,)
        self._keys: list[tuple[str, bytes]] = []
        self._owned: dict[str, bool] = {}

    @property
    def members(self) -> tuple[str, ...]:
        """The live instances' ids, sorted (this instance always among them)."""
        return self._members

    @property
    def alone(self) -> bool:
        """Whether this instance knows of no other live one (it then owns every job)."""
        return len(self._members) == 1

    def reset(self, instance_id: str) -> None:
        """A new identity (at start): alone until the first heartbeat says otherwise."""
        self._me = instance_id
        self.set_members(())

    def set_members(self, instance_ids: Iterable[str]) -> bool:
        """Take the live instances from a heartbeat's answer.

        This instance counts as live whatever the list says: a record that expired while it
        was cut off comes back with its next heartbeat, and meanwhile it must go on running
        the jobs nobody else may be watching.

        :returns: whether the list changed (owners must then be recomputed).
        """
        members = tuple(sorted(set(instance_ids) | {self._me}))
        if members == self._members:
            return False
        self._members = members
        # A per-member key for keyed BLAKE2b: one C call per (member, job) weight.
        self._keys = [(member, hashlib.blake2b(member.encode("utf-8"), digest_size=16).digest())
                      for member in members]
        self._owned = {}
        return True

    def owns(self, job_name: str) -> bool:
        """Whether this instance is the job's owner among the live instances."""
        if len(self._members) == 1:
            return True
        owned = self._owned.get(job_name)
        if owned is None:
            owned = self._owned[job_name] = self.owner_of(job_name) == self._me
        return owned

    def owner_of(self, job_name: str) -> str:
        """The live instance whose weight for ``job_name`` is the highest."""
        if len(self._members) == 1:
            return self._members[0]
        name = job_name.encode("utf-8")
        best, best_weight = "", b""
        for member, key in self._keys:
            weight = hashlib.blake2b(name, key=key, digest_size=8).digest()
            if weight > best_weight:
                best, best_weight = member, weight
        return best


class Owners:
    """One instance's view of who owns its jobs, followed from heartbeats and claim answers.

    It parks and watches the jobs in the local index as their owners change, and tells the
    claimer whether a peeked occurrence is this instance's to take (:meth:`may_take`). Three
    things bend plain hashing:

    - **pinned** jobs were asked for here (``run_now``, ``resume``, a retry of a run here, a
      takeover): they stay watched, whoever owns them, until the backend's answer;
    - **suspected** owners let an occurrence go ``takeover_delay`` overdue: until they
      heartbeat again their jobs are owned among the others, so that those run on time rather
      than each a takeover late;
    - a job **removed** elsewhere is never asked for by the instances that park it: a change
      of the backend's removals count makes them look for the jobs it no longer stores.

    The heartbeat's answer arrives on the lease refresher's thread (:meth:`members_heard`);
    the tick follows it at its next pass (:meth:`follow_members`), alone.
    """

    def __init__(self, index: DueIndex, backend: Backend, takeover_seconds: float,
                 hooks: SafeHooks, wake: threading.Event) -> None:
        self._index, self._backend, self._hooks, self._wake = index, backend, hooks, wake
        self._takeover_seconds = takeover_seconds
        self._takeover_ms = takeover_seconds * 1000
        self.instance_id = ""
        #: the rendezvous hashing over the live instances less the suspected ones
        self.ownership = Ownership()
        #: the live instances (id, last heartbeat ms) from the last heartbeat, and whether
        #: the tick has yet to follow them (or a suspicion changed what they mean)
        self._heard: list[tuple[str, int]] = []
        self._heard_new = False
        #: owners that let an occurrence go takeover_delay overdue, and when (backend ms):
        #: their jobs are claimed elsewhere until they heartbeat again
        self._suspected: dict[str, int] = {}
        #: jobs asked for here whoever owns them, until the backend's answer; ownership
        #: changes leave them armed meanwhile
        self.pinned: set[str] = set()
        #: the owner of each job taken over and its due time then, until the claim's answer
        self.taking_over: dict[str, tuple[str, int]] = {}
        self.members_epoch = -1  # as the last claim answer told it
        self.removals_epoch = -1  # as the last claim answer told it, once followed
        self._removals_heard = -1  # as the last claim answer told it
        self._digest: tuple[int, str] = (-1, "")  # (the index's generation, its digest)

    def reset(self, instance_id: str) -> None:
        """A new identity (at start): alone until the first heartbeat says otherwise."""
        self.instance_id = instance_id
        self.ownership.reset(instance_id)

    # -- what this instance hears ------------------------------------------------------------

    def members_heard(self, instances: list[InstanceInfo]) -> None:
        """A heartbeat's answer (on the refresher's thread): the tick follows it next pass."""
        if self._takeover_seconds > 0:  # 0: every instance claims everything on time
            mine = self.jobs_digest()
            self._heard = [(info.instance_id, info.last_heartbeat_ms) for info in instances
                           if info.jobs_digest in ("", mine)]
            self._heard_new = True
            self._wake.set()

    def jobs_digest(self) -> str:
        """The fingerprint of this instance's jobs, which its heartbeat carries; computed
        again only when a job was registered or dropped."""
        generation, digest = self._digest
        if generation != self._index.generation:
            generation = self._index.generation
            digest = jobs_digest((entry.job.name, entry.job.definition_version)
                                 for entry in self._index.entries())
            self._digest = (generation, digest)
        return digest

    def heard_epochs(self, members_epoch: int, removals_epoch: int) -> bool:
        """A claim answer's counts of the group's changes (the caller compared them with
        :attr:`members_epoch` and :attr:`removals_epoch` first, per answer).

        :returns: whether an instance joined or left, so that a heartbeat should go now: its
            answer says who is live.
        """
        if removals_epoch != self.removals_epoch:
            self._removals_heard = removals_epoch  # the tick follows it next pass
            self._wake.set()
        if members_epoch == self.members_epoch:
            return False
        self.members_epoch = members_epoch
        return True

    def suspect(self, claim: Claim, owner: str, due_ms: int, now_ms: int) -> None:
        """An owner let an occurrence go ``takeover_delay`` overdue: crashed, frozen, cut off,
        busy or without the job. Until it heartbeats again its jobs are owned among the
        others, so that they run on time rather than each a takeover late."""
        if claim.scheduled_ms > due_ms:  # a regular occurrence, and later ones were due too
            self._hooks.log("warning", "took over an occurrence its owner let go overdue; "
                            "the occurrences due since coalesced into this one",
                            job=claim.job_name, owner=owner, due_at=from_ms(due_ms).isoformat(),
                            scheduled_at=from_ms(claim.scheduled_ms).isoformat())
        if owner in self._suspected or owner == self.instance_id:
            return
        self._suspected[owner] = now_ms
        self._heard_new = True
        self._hooks.log("info", "took over an occurrence its owner let go overdue: until that "
                        "instance heartbeats again, its jobs are claimed by the others",
                        job=claim.job_name, owner=owner,
                        takeover_delay=self._takeover_seconds)

    # -- what the claimer asks ---------------------------------------------------------------

    def may_take(self, due: DueEntry, now_ms: int) -> bool:
        """Whether a peeked job is this instance's to claim now: its own, one the backend
        reports as missing or superseded (handled as every answer is), or one overdue by
        ``takeover_delay``."""
        if due.missing or due.superseded or due.due_ms is None or \
                self.ownership.owns(due.name):
            return True
        if now_ms - due.due_ms < self._takeover_ms:
            return False
        self.taking_over[due.name] = (self.ownership.owner_of(due.name), due.due_ms)
        return True

    # -- what the tick follows ---------------------------------------------------------------

    def follow_members(self) -> list[tuple[IndexEntry, JobState]]:
        """Recompute the owners after the live instances changed: park the jobs now owned
        elsewhere, and watch those now owned here, from their current states (a state
        learnt long ago would only cost a refused claim, but one read answers them all).

        :returns: the jobs gained, with their states read now, for the caller to apply.
        """
        if not self._heard_new:
            return []
        self._heard_new = False
        if not self.ownership.set_members(self._live_members()):
            return []
        gained = []
        for entry in self._index.entries():
            if not self.ownership.owns(entry.job.name):
                if entry.job.name not in self.pinned:
                    self._index.park(entry)
            elif not entry.armed:
                gained.append(entry)
                self._index.set_due(entry, entry.due_ms, entry.next_run_ms)
        self._hooks.log("info", "the group's live instances changed", instances=len(
            self.ownership.members), owned_jobs_gained=len(gained))
        if not gained:
            return []
        states = self._backend.get_states([entry.job.name for entry in gained])
        # Parked until now: none has a claim in flight.
        return [(entry, state) for entry, state in zip(gained, states) if state is not None]

    def _live_members(self) -> list[str]:
        """The heard live instances, less those suspected since their last heartbeat."""
        live = []
        for member, beat_ms in self._heard:
            since = self._suspected.get(member)
            if since is not None and beat_ms > since:
                del self._suspected[member]  # it heartbeats: alive, and owns again
                since = None
            if since is None:
                live.append(member)
        heard = {member for member, _ in self._heard}
        for member in [m for m in self._suspected if m not in heard]:
            del self._suspected[member]  # expired from the group
        return live

    def follow_removals(self) -> list[IndexEntry]:
        """A job was removed somewhere in the group, or found gone (its state lost or reset
        for not being of our form): the instances that park it never ask for it, so they
        would keep it for ever, or never re-create it. One read of the names, once per change.

        :returns: the jobs here that the backend no longer stores, for the caller to ask for
            at once: each answer says removed (dropped here) or lost (re-created).
        """
        heard = self._removals_heard
        if heard == self.removals_epoch:
            return []
        stored = set(self._backend.job_names())
        self.removals_epoch = heard
        # (one with a claim in flight is asked twice)
        return [entry for entry in self._index.entries() if entry.job.name not in stored]

