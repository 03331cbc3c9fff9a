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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["Ownership", "jobs_digest"]


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
