"""RedisBackend: job state shared through Redis by schedulers on many hosts.

Each transition of the contract in :mod:`pyscheduler.backends.base` is one Lua script (in
``backends/lua/``, each prefixed with ``common.lua``), run with ``EVALSHA``, so it is atomic
and costs one round trip however many jobs it covers. Every time decision (due-ness, misfire,
lease expiry, retry time, the fence's microsecond floor) uses the server's ``TIME``.

Key layout, for ``key_prefix="pfx"``; every key carries the hash tag ``{pfx}`` so that one
group lives in one Redis Cluster slot, unless it is spread over ``partitions`` (see
:mod:`.redis_partitions`): each further partition then has the same keys under a tag of its
own, ``{pfx#k}`` (the instances and their records excepted, which stay in ``{pfx}``), and a
job's keys are all in its partition:

===========================  ======  ===========================================================
key                          type    holds
===========================  ======  ===========================================================
``{pfx}:job:<name>``         hash    the job's state: ``v`` (layout, ``1``), ``def`` (its
                                     description as JSON), ``next_run``, ``paused``, ``fence``,
                                     ``manual_at``, ``due``, counters and ``last_*`` fields; the
                                     latest claim (``owner``, ``scheduled``, ``attempt``, ``kind``,
                                     ``claimed_at``, ``lease_ms``) and the occurrence in flight
                                     (``status``, ``retry_at``, ``recoveries``, ``lease_until``).
                                     Integers are decimal strings, ``""`` stands for none.
``{pfx}:lease:<name>``       string  ``<owner>|<fence>`` of the running attempt, with a PX TTL
``{pfx}:due``                zset    job name scored by its due time (epoch ms)
``{pfx}:jobs``               set     the names of every stored job
``{pfx}:removed``            set     tombstones of jobs removed by an operator
``{pfx}:instances``          zset    live instance ids scored by their record's expiry (epoch ms)
``{pfx}:epochs``             hash    change counters: ``members`` (an instance joined or
                                     left), ``removals`` (a job was removed or found gone)
``{pfx}:layout``             string  the partition's group, index and the group's number of
                                     partitions (JSON), checked by :meth:`RedisBackend.open`
===========================  ======  ===========================================================

and ``{pfx}:instance:<id>``, a string: that instance's record, an
:class:`~pyscheduler.backends.base.InstanceInfo` as a JSON object (``v``: ``1``), with a PX
TTL of the same expiry. The zset decides who is live; the TTL makes a dead instance's record
go away even when no other instance heartbeats.

A running attempt holds its lease while the lease key still holds its token and the server's
clock is before ``lease_until``: the key's TTL is Redis's own guarantee that a dead holder's
lease goes away, ``lease_until`` keeps the due index exact to the millisecond.

Each script is passed the keys of the jobs it names; only the claim script's peek at other due
jobs reads job keys it derives itself, which the hash tag keeps in the same Cluster slot.

Nothing read from Redis is unpickled or evaluated. A value under these keys that is not of
our form (another type, a junk field, a lease without TTL) makes the job's state reset: its
keys are deleted without a tombstone, an error is logged, and the job reads as missing, so
the schedulers that know it re-create it. An instance record not of our form is skipped
(logged once per instance id), never evaluated; a value of another type under
``{pfx}:instances`` is deleted by the next heartbeat, which the instances' heartbeats rebuild.
A history record not of our form is skipped (logged), a history key of another type reads as
empty and is replaced by the next record pushed there.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from functools import cache, partial
from importlib import resources
from itertools import islice
from operator import itemgetter
from typing import Any, Callable, Optional, Sequence, TypeVar, Union, cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import BackendError, BackendUnavailableError, ConfigError, CorruptStateError
from .base import (
    GROUP_HISTORY_LIMIT,
    HISTORY_ERROR_BYTES,
    Backend,
    ClaimBatch,
    ClaimRequest,
    DueEntry,
    InstanceInfo,
    JobDefinition,
    JobState,
    Lease,
    Outcome,
    RunRecord,
)
from .redis_clients import (
    Client,
    address_of,
    close_refresh_client,
    cluster_client,
    refresh_client_for,
    servers_of,
)
from .redis_history import parse_dated_run
from .redis_partitions import (
    PartitionKeys,
    check_partitions,
    layout_mismatch,
    layout_record,
    partition_index,
    partition_tags,
    stored_partitions,
)
from .redis_replies import (
    ScriptArg,
    instance_record,
    json_arg,
    optional_arg,
    outcome_rows,
    parse_claim,
    parse_due_entry,
    parse_instance,
    parse_reply,
    parse_state,
    reply_text,
)

__all__ = ["RedisBackend"]

logger = logging.getLogger("pyscheduler.redis")

#: Jobs per register script call.
_REGISTER_CHUNK = 500

_T = TypeVar("_T")
_I = TypeVar("_I")

_SCRIPTS = ("register", "claim", "refresh", "finish", "interrupt", "set_paused", "run_now",
            "remove", "get_states", "reset", "heartbeat")

#: Malformed instance records are logged once per instance id, for this many ids at most.
_REPORTED_MAX = 1_000


class _Script:
    """A script's text and the SHA1 that ``EVALSHA`` names it by."""

    __slots__ = ("script", "sha")

    def __init__(self, script: str) -> None:
        self.script = script
        self.sha = hashlib.sha1(script.encode("utf-8")).hexdigest()


@cache
def _lua(name: str) -> str:
    folder = resources.files("pyscheduler.backends") / "lua"
    common = (folder / "common.lua").read_text(encoding="utf-8")
    return common + "\n" + (folder / f"{name}.lua").read_text(encoding="utf-8")


class RedisBackend(Backend):
    """A :class:`~pyscheduler.backends.base.Backend` on Redis (5.0 or later).

    :param client: the redis-py client, of one server (:class:`redis.Redis`, Sentinel's
        master included) or of a Redis Cluster (:class:`redis.cluster.RedisCluster`); its own
        settings (timeouts, retries, TLS) are kept.
    :param key_prefix: prefix of every key; the schedulers sharing it form one group.
    :param partitions: how many hash-tag partitions the group's jobs are spread over, so
        that a Redis Cluster shares them among its masters (:mod:`.redis_partitions`); ``1``
        keeps the whole group in one slot. It must be the group's: :meth:`open` refuses
        another count with a :class:`~pyscheduler.ConfigError`. ``None`` follows the
        count stored for the group (read at first use; ``1`` for a new group), for tools
        that operate a group rather than create it.
    :param owns_client: close ``client`` in :meth:`close` (set by :meth:`from_url` and
        :meth:`from_address`); a client passed in is otherwise never closed.
    :param refresh_client: the client for lease refreshes; by default one built from
        ``client``'s connection settings with short timeouts and at most one retry.
    :raises ValueError: ``key_prefix`` is empty, or ``partitions`` is out of range.
    """

    def __init__(
        self,
        client: Client,
        key_prefix: str = "pyscheduler",
        *,
        partitions: Optional[int] = 1,
        owns_client: bool = False,
        refresh_client: Optional[Client] = None,
    ) -> None:
        if not key_prefix:
            raise ValueError("key_prefix must not be empty")
        if partitions is not None:
            check_partitions(key_prefix, partitions)
        self._client = client
        self._owns_client = owns_client
        self._owns_refresh_client = refresh_client is None
        self._refresh_client = refresh_client or refresh_client_for(client)
        self._address = address_of(client)
        self._key_prefix = key_prefix
        #: the partitions, once known (see _parts)
        self._known_parts = None if partitions is None else partition_tags(key_prefix,
                                                                           partitions)
        #: the change counters (members, removals) each partition last answered
        self._epochs: dict[int, tuple[int, int]] = {}
        # The group-wide keys live in partition 0, whose tag is {pfx} whatever the count.
        self._first = PartitionKeys(0, "{" + key_prefix + "}")
        self._instances_key = f"{self._first.tag}:instances"
        self._instance_prefix = f"{self._first.tag}:instance:"
        self._reported: set[str] = set()  # ids of malformed instance records, logged once
        self._scripts = {name: _Script(_lua(name)) for name in _SCRIPTS}

    @classmethod
    def from_url(cls, url: str, key_prefix: str = "pyscheduler", *, cluster: bool = False,
                 partitions: Optional[int] = 1, **kwargs: Any) -> RedisBackend:
        """A backend on a client it builds (and closes) from a ``redis://``, ``rediss://`` or
        ``unix://`` URL, parsed by redis-py (ACL users and TLS options included).

        :param cluster: the URL names a node of a Redis Cluster: the client is a
            :class:`~redis.cluster.RedisCluster`, which finds the others.
        :param partitions: see :class:`RedisBackend`.
        :param kwargs: passed to :meth:`redis.Redis.from_url` (or ``RedisCluster``'s).
        """
        client: Client = (cluster_client(partial(RedisCluster.from_url, url, **kwargs))
                          if cluster else redis.Redis.from_url(url, **kwargs))
        return cls(client, key_prefix, partitions=partitions, owns_client=True)

    @classmethod
    def from_address(
        cls,
        addr: str = "localhost:6379",
        password: str = "",
        db: int = 0,
        key_prefix: str = "pyscheduler",
        *,
        cluster: bool = False,
        partitions: Optional[int] = 1,
        **kwargs: Any,
    ) -> RedisBackend:
        """A backend on a client it builds (and closes) for ``host:port``.

        :param cluster: ``addr`` is a node of a Redis Cluster (whose only database is 0).
        :param partitions: see :class:`RedisBackend`.
        :param kwargs: passed to :class:`redis.Redis` (or ``RedisCluster``).
        :raises ConfigError: ``addr`` is not ``host:port``.
        """
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError("redis_addr", f"must be host:port, got {addr!r}")
        client: Client
        if cluster:
            if db != 0:
                raise ConfigError("redis_db", f"a Redis Cluster has database 0 only, got {db}")
            client = cluster_client(partial(RedisCluster, host=host.strip("[]"),
                                             port=int(port), password=password or None,
                                             **kwargs))
        else:
            client = redis.Redis(host=host.strip("[]"), port=int(port), db=db,
                                 password=password or None, **kwargs)
        return cls(client, key_prefix, partitions=partitions, owns_client=True)

    def __repr__(self) -> str:
        return f"RedisBackend({self._address!r}, key_prefix={self._key_prefix!r})"

    @property
    def address(self) -> str:
        """Where the Redis server is (no credentials), for error messages."""
        return self._address

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Check that Redis answers, load the scripts, check the eviction policy and that the
        group is stored in as many partitions as configured.

        :raises ConfigError: the group is stored in another number of partitions (or these
            keys are another group's partition).
        """
        self._boundary(self._client.ping)
        for script in self._scripts.values():  # on every master of a cluster
            self._boundary(partial(self._client.script_load, script.script))
        self._check_eviction()
        self._check_layout()

    @property
    def partitions(self) -> int:
        """How many hash-tag partitions the group's jobs are spread over."""
        return len(self._parts)

    @property
    def _parts(self) -> list[PartitionKeys]:
        parts = self._known_parts
        if parts is None:
            parts = self._known_parts = partition_tags(self._key_prefix, self._stored_count())
        return parts

    def _part(self, name: str) -> PartitionKeys:
        parts = self._parts
        return parts[partition_index(name, len(parts))]

    def _stored_count(self) -> int:
        """The number of partitions the group is stored in (1 if it is stored nowhere)."""
        raw = self._boundary(lambda: self._client.get(self._first.layout))
        stored = None if raw is None else stored_partitions(raw)
        if raw is not None and (stored is None or stored[:2] != (self._key_prefix, 0)):
            raise BackendError(f"the layout record {self._first.layout!r} in Redis at "
                               f"{self._address} is not this group's: "
                               f"{layout_mismatch(self._key_prefix, 0, 1, raw)}")
        count = 1 if stored is None else stored[2]
        try:
            check_partitions(self._key_prefix, count)
        except ValueError as exc:
            raise BackendError(f"the layout record {self._first.layout!r} in Redis at "
                               f"{self._address}: {exc}") from None
        return count

    def _holds_other_partitions_jobs(self, part: PartitionKeys, count: int) -> bool:
        members = cast("set[Any]", self._boundary(partial(self._client.smembers,
                                                          part.common[1])))
        return any(partition_index(reply_text(member), count) != part.index for member in members)

    def _check_layout(self) -> None:
        """Record the group's partitions where it is new; refuse to go on where it is stored
        otherwise (see :mod:`.redis_partitions`)."""
        parts = self._parts
        for part in parts:
            stored = self._boundary(partial(self._client.get, part.layout))
            if stored is None:
                wanted = layout_record(self._key_prefix, part.index, len(parts))
                if part.index == 0 and self._holds_other_partitions_jobs(part, len(parts)):
                    # jobs stored before partitions were recorded: in one partition (a
                    # partitioned group that lost its keys has only partition 0's jobs here)
                    wanted = layout_record(self._key_prefix, 0, 1)
                # NX: of two instances opening a new group, the first one's count holds.
                self._boundary(partial(self._client.set, part.layout, wanted, nx=True))
                stored = self._boundary(partial(self._client.get, part.layout))
            why = layout_mismatch(self._key_prefix, part.index, len(parts), stored)
            if why is not None:
                raise ConfigError("partitions", f"cannot open the group {self._key_prefix!r} "
                                  f"in Redis at {self._address} with {len(parts)} "
                                  f"partition(s) ({part.layout}): {why}")

    def close(self) -> None:
        if self._owns_refresh_client:
            close_refresh_client(self._refresh_client)
        if self._owns_client:
            self._client.close()

    def now_ms(self) -> int:
        seconds, micros = self._boundary(self._client.time)
        return int(seconds) * 1000 + int(micros) // 1000

    def _check_eviction(self) -> None:
        for server in servers_of(self._client):
            self._check_server_eviction(server)

    def _check_server_eviction(self, server: redis.Redis) -> None:
        try:
            raw = cast("dict[Any, Any]", server.config_get("maxmemory*"))
        except ResponseError as exc:  # CONFIG is often not permitted (ACL users, managed Redis)
            logger.info("could not check the maxmemory-policy of Redis at %s (%s): make sure "
                        "it is noeviction, or leases and job state can be evicted",
                        self._address, exc)
            return
        except RedisError as exc:
            raise self._translate(exc) from exc
        config = {reply_text(key): reply_text(value) for key, value in raw.items()}
        policy = config.get("maxmemory-policy", "noeviction")
        maxmemory = int(config.get("maxmemory", "0") or 0)
        if maxmemory > 0 and policy != "noeviction":
            logger.warning(
                "Redis at %s evicts keys under memory pressure (maxmemory-policy %s, "
                "maxmemory %d bytes): leases and job state can vanish, so occurrences may run "
                "twice or be lost; set maxmemory-policy to noeviction",
                self._address, policy, maxmemory,
            )

    # -- registration and management ---------------------------------------------------------

    def register(self, definitions: Sequence[JobDefinition]) -> list[JobState]:
        # In chunks: one script over 100,000 jobs would block Redis for seconds and outlast
        # the client's socket timeout.
        def register_part(part: PartitionKeys,
                          chunk: Sequence[JobDefinition]) -> list[JobState]:
            states: list[JobState] = []
            for start in range(0, len(chunk), _REGISTER_CHUNK):
                states += self._register(part, chunk[start:start + _REGISTER_CHUNK])
            return states

        return self._per_partition(definitions, _definition_name, register_part)

    def _register(self, part: PartitionKeys,
                  definitions: Sequence[JobDefinition]) -> list[JobState]:
        rows = [[definition.name, optional_arg(definition.first_run_ms),
                 int(definition.start_paused),
                 json.dumps(definition.description, sort_keys=True, default=str),
                 definition.version] for definition in definitions]
        names = [definition.name for definition in definitions]
        raws = self._call("register", part, names, [json_arg(rows)])
        states = []
        for definition, raw in zip(definitions, raws):
            # The reply leaves out the description: it is the one just sent.
            state = self._state(definition.name, raw, definition.description)
            if state is None:  # reset: it was written by another version of us
                raise BackendError(f"Redis at {self._address} stored job {definition.name!r} "
                                   "in a form this version cannot read")
            states.append(state)
        return states

    def pause(self, name: str) -> DueEntry:
        return parse_due_entry(self._call("set_paused", self._part(name), [name], [name, 1]))

    def resume(self, name: str) -> DueEntry:
        return parse_due_entry(self._call("set_paused", self._part(name), [name], [name, 0]))

    def remove(self, name: str) -> bool:
        part = self._part(name)
        return bool(self._call("remove", part, [name],
                               [name, part.history_prefix, part.history],
                               last_keys=[part.epochs]))

    def run_now(self, name: str) -> DueEntry:
        return parse_due_entry(self._call("run_now", self._part(name), [name], [name]))

    def get_states(self, names: Sequence[str]) -> list[Optional[JobState]]:
        def get_part(part: PartitionKeys, chunk: Sequence[str]) -> list[Optional[JobState]]:
            raws = self._call("get_states", part, chunk, list(chunk))
            return [self._state(name, raw) for name, raw in zip(chunk, raws)]

        return self._per_partition(names, str, get_part)

    def job_names(self) -> list[str]:
        names: set[str] = set()
        for part in self._parts:
            members = cast("set[Any]", self._boundary(partial(self._client.smembers,
                                                              part.common[1])))
            names.update(reply_text(member) for member in members)
        return sorted(names)

    # -- claiming ----------------------------------------------------------------------------

    def claim(
        self, instance_id: str, requests: Sequence[ClaimRequest], lease_ms: int, peek: int
    ) -> ClaimBatch:
        return self.finish_and_claim((), instance_id, requests, lease_ms, peek)[1]

    def finish_and_claim(
        self, outcomes: Sequence[Outcome], instance_id: str, requests: Sequence[ClaimRequest],
        lease_ms: int, peek: int,
    ) -> tuple[list[Optional[JobState]], ClaimBatch]:
        """:meth:`finish` then :meth:`claim`, in one script call (one round trip) per partition
        that has work, and every partition when it peeks."""
        parts = self._parts
        if len(parts) == 1:
            return self._finish_and_claim(parts[0], outcomes, instance_id, requests, lease_ms,
                                          peek)
        count = len(parts)
        asked: dict[int, tuple[list[Outcome], list[ClaimRequest]]] = {
            part.index: ([], []) for part in parts if peek > 0}
        for outcome in outcomes:
            asked.setdefault(partition_index(outcome.lease.job_name, count),
                             ([], []))[0].append(outcome)
        for request in requests:
            asked.setdefault(partition_index(request.job_name, count),
                             ([], []))[1].append(request)
        if not asked:  # partition 0 still answers the time and the change counters
            asked[0] = ([], [])
        states: dict[str, Optional[JobState]] = {}
        batches = []
        for index, (part_outcomes, part_requests) in sorted(asked.items()):
            part_states, batch = self._finish_and_claim(
                parts[index], part_outcomes, instance_id, part_requests, lease_ms, peek)
            states.update(zip((outcome.lease.job_name for outcome in part_outcomes),
                              part_states))
            batches.append(batch)
        return ([states[outcome.lease.job_name] for outcome in outcomes],
                self._merged(batches, peek))

    def _merged(self, batches: list[ClaimBatch], peek: int) -> ClaimBatch:
        """One answer from the partitions' answers: the group's change counters are the
        members counter of partition 0 (where the heartbeat keeps it) and the sum of every
        partition's removals counter, each as its partition last answered."""
        due = sorted((entry for batch in batches for entry in batch.due),
                     key=lambda entry: (entry.due_ms is None, entry.due_ms or 0))
        return ClaimBatch(
            claims=[claim for batch in batches for claim in batch.claims],
            refused=[entry for batch in batches for entry in batch.refused],
            due=due[:peek],
            skipped=[name for batch in batches for name in batch.skipped],
            abandoned=[name for batch in batches for name in batch.abandoned],
            now_ms=max(batch.now_ms for batch in batches),
            members_epoch=self._epochs.get(0, (0, 0))[0],
            removals_epoch=sum(removals for _, removals in self._epochs.values()),
        )

    def _finish_and_claim(
        self, part: PartitionKeys, outcomes: Sequence[Outcome], instance_id: str,
        requests: Sequence[ClaimRequest], lease_ms: int, peek: int,
    ) -> tuple[list[Optional[JobState]], ClaimBatch]:
        rows = [[request.job_name, request.owner, int(request.expected_due_ms),
                 optional_arg(request.expected_next_run_ms), optional_arg(request.scheduled_ms),
                 optional_arg(request.following_ms), optional_arg(request.misfire_grace_ms),
                 int(request.max_recoveries), request.definition_version,
                 max(0, int(request.history_limit))]
                for request in requests]
        # Abandoning a claim records history as finishing does: the history arguments are
        # always sent, the outcomes only when there are some.
        args: list[ScriptArg] = [max(1, int(lease_ms)), max(0, int(peek)), part.job_prefix,
                                 part.lease_prefix, *_history_args(part), json_arg(rows)]
        finished = [outcome.lease.job_name for outcome in outcomes]
        if outcomes:
            args.append(json_arg(outcome_rows(outcomes)))
        reply = self._call("claim", part,
                           [request.job_name for request in requests] + finished,
                           args, last_keys=[part.epochs])

        def batch() -> ClaimBatch:
            # One JSON document; the script's empty lists come back as {} (cjson cannot tell
            # an empty array from an empty object).
            now, claims, refused, due, skipped, abandoned, members, removals = json.loads(
                reply_text(reply[0]))
            return ClaimBatch(
                claims=[parse_claim(row) for row in claims or ()],
                refused=[parse_due_entry(row) for row in refused or ()],
                due=[parse_due_entry(row) for row in due or ()],
                skipped=[str(name) for name in skipped or ()],
                abandoned=[str(name) for name in abandoned or ()],
                now_ms=int(now),
                members_epoch=int(members),
                removals_epoch=int(removals),
            )

        claimed = parse_reply(self._address, batch)
        self._epochs[part.index] = (claimed.members_epoch, claimed.removals_epoch)
        raws = parse_reply(self._address, lambda: list(reply[1]))
        return [self._state(name, raw) for name, raw in zip(finished, raws)], claimed

    # -- leases and outcomes -----------------------------------------------------------------

    def refresh(self, leases: Sequence[Lease], lease_ms: int) -> list[bool]:
        def refresh_part(part: PartitionKeys, chunk: Sequence[Lease]) -> list[bool]:
            args: list[ScriptArg] = [max(1, int(lease_ms))]
            for lease in chunk:
                args += [lease.job_name, lease.owner, int(lease.fence)]
            held = self._call("refresh", part, [lease.job_name for lease in chunk], args,
                              client=self._refresh_client)
            return [bool(value) for value in held]

        return self._per_partition(leases, _lease_name, refresh_part)

    def finish(self, outcomes: Sequence[Outcome]) -> list[Optional[JobState]]:
        def finish_part(part: PartitionKeys,
                        chunk: Sequence[Outcome]) -> list[Optional[JobState]]:
            names = [outcome.lease.job_name for outcome in chunk]
            raws = self._call("finish", part, names,
                              [json_arg(outcome_rows(chunk)), *_history_args(part)])
            return [self._state(name, raw) for name, raw in zip(names, raws)]

        return self._per_partition(outcomes, _outcome_name, finish_part)

    def interrupt(self, leases: Sequence[Lease]) -> list[bool]:
        def interrupt_part(part: PartitionKeys, chunk: Sequence[Lease]) -> list[bool]:
            args: list[ScriptArg] = []
            for lease in chunk:
                args += [lease.job_name, lease.owner, int(lease.fence)]
            released = self._call("interrupt", part, [lease.job_name for lease in chunk], args)
            return [bool(value) for value in released]

        return self._per_partition(leases, _lease_name, interrupt_part)

    # -- live instances ----------------------------------------------------------------------

    def heartbeat(self, info: InstanceInfo, ttl_ms: int) -> list[InstanceInfo]:
        """See :meth:`~.base.Backend.heartbeat`; sent through the refresher's bounded client,
        since the lease refresher's thread sends it."""
        record = json.dumps(instance_record(info), sort_keys=True, separators=(",", ":"))
        return self._instances_script("beat", [info.instance_id, max(1, int(ttl_ms)), record],
                                      self._refresh_client)

    def instances(self) -> list[InstanceInfo]:
        return self._instances_script("list", [], self._client)

    def leave(self, instance_id: str) -> None:
        """See :meth:`~.base.Backend.leave`; through the bounded client, so that a stop
        never waits on an unreachable Redis longer than a refresh would."""
        self._instances_script("leave", [instance_id], self._refresh_client)

    def _instances_script(self, mode: str, args: Sequence[ScriptArg],
                          client: Client) -> list[InstanceInfo]:
        keys = [*self._first.common, self._instances_key, self._first.epochs]
        reply = self._boundary(lambda: self._evalsha(
            "heartbeat", keys, [mode, self._instance_prefix, *args], client))
        live, corrupt = parse_reply(self._address,
                                     lambda: (list(reply[0][1]), list(reply[1])))
        for instance_id, why in zip(corrupt[::2], corrupt[1::2]):
            self._report_instance(reply_text(instance_id), reply_text(why))
        infos = []
        for member, raw in zip(live[::2], live[1::2]):
            instance_id = reply_text(member)
            try:
                infos.append(parse_instance(instance_id, raw))
            except CorruptStateError as exc:
                self._report_instance(instance_id, str(exc))
        return sorted(infos, key=lambda info: info.instance_id)

    def _report_instance(self, instance_id: str, why: str) -> None:
        if instance_id in self._reported or len(self._reported) >= _REPORTED_MAX:
            return
        self._reported.add(instance_id)
        if not instance_id:
            logger.error("the instances key in Redis at %s holds a value not of our form (%s); "
                         "a heartbeat resets it, and the instances' heartbeats rebuild it "
                         "(logged once)", self._address, why)
            return
        logger.warning("the record of instance %r in Redis at %s is not of our form (%s); "
                       "it is skipped (logged once)", instance_id, self._address, why)

    # -- run history -------------------------------------------------------------------------

    def history(self, name: Optional[str], limit: int) -> list[RunRecord]:
        """See :meth:`~.base.Backend.history`: one ``LRANGE``."""
        if limit <= 0:
            return []
        if name is not None:
            part = self._part(name)
            return self._history(part.history_prefix + name, limit)
        if len(self._parts) == 1:
            return self._history(self._first.history, limit)
        # Each partition keeps its newest GROUP_HISTORY_LIMIT, newest first: the group's
        # newest are among them, merged by when each was written (a partition's own order
        # decides between records of one instant).
        lists = [self._dated_history(part.history, limit) for part in self._parts]
        merged = heapq.merge(*lists, key=itemgetter(0), reverse=True)
        return [record for _, record in islice(merged, min(limit, GROUP_HISTORY_LIMIT))]

    def _history(self, key: str, limit: int) -> list[RunRecord]:
        return [record for _, record in self._dated_history(key, limit)]

    def _dated_history(self, key: str, limit: int) -> list[tuple[int, RunRecord]]:
        """The records of the list at ``key``, newest first, each with when it was written
        (see :func:`.redis_history.parse_dated_run`)."""
        try:
            raws = cast("list[Any]", self._client.lrange(key, 0, limit - 1))
        except ResponseError as exc:  # WRONGTYPE: not ours; the next record replaces it
            logger.warning("the history key %r in Redis at %s holds no list (%s); it reads "
                           "as empty", key, self._address, exc)
            return []
        except RedisError as exc:
            raise self._translate(exc) from exc
        records: list[tuple[int, RunRecord]] = []
        skipped: list[str] = []
        for raw in raws:
            try:
                records.append(parse_dated_run(raw))
            except CorruptStateError as exc:
                skipped.append(str(exc))
        if skipped:
            logger.warning("skipped %d record(s) not of our form in the history key %r in "
                           "Redis at %s (first: %s)", len(skipped), key, self._address,
                           skipped[0])
        return records

    # -- plumbing ----------------------------------------------------------------------------

    def _per_partition(self, items: Sequence[_I], name_of: Callable[[_I], str],
                       run: Callable[[PartitionKeys, Sequence[_I]], list[_T]]) -> list[_T]:
        """``run`` over the items of each partition (one call each), its results in the
        order of ``items``."""
        if not items:
            return []
        parts = self._parts
        if len(parts) == 1:
            return run(parts[0], items)
        positions: dict[int, list[int]] = {}
        for position, item in enumerate(items):
            positions.setdefault(partition_index(name_of(item), len(parts)),
                                 []).append(position)
        results: list[Any] = [None] * len(items)
        for index, where in positions.items():
            for position, result in zip(where, run(parts[index],
                                                   [items[at] for at in where])):
                results[position] = result
        return results

    def _call(self, script: str, part: PartitionKeys, names: Sequence[str],
              args: Sequence[ScriptArg], client: Optional[Client] = None,
              last_keys: Sequence[str] = ()) -> Any:
        """Run a script over the jobs ``names`` of partition ``part`` (then ``last_keys``)
        and log the jobs it reset."""
        keys = part.common
        job_prefix, lease_prefix = part.job_prefix, part.lease_prefix
        for name in names:
            keys += [job_prefix + name, lease_prefix + name]
        keys += last_keys
        reply = self._boundary(lambda: self._evalsha(script, keys, args, client or self._client))
        payload, corrupt = parse_reply(self._address, lambda: (reply[0], list(reply[1])))
        for name, why in zip(corrupt[::2], corrupt[1::2]):
            logger.error("job %r in Redis at %s held a value not of our form (%s); its state "
                         "was reset and its schedulers re-create it",
                         reply_text(name), self._address, reply_text(why))
        return payload

    def _evalsha(self, name: str, keys: Sequence[str], args: Sequence[ScriptArg],
                 client: Client) -> Any:
        # EVALSHA itself rather than redis-py's Script object, whose wrapper costs a fifth of
        # a call's client time; a server that lost its scripts (restart, SCRIPT FLUSH) is
        # given them again, as the wrapper would.
        script = self._scripts[name]
        try:
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(script.script)
            return client.evalsha(script.sha, len(keys), *keys, *args)

    def _state(self, name: str, raw: object,
               description: Optional[dict[str, object]] = None) -> Optional[JobState]:
        if not isinstance(raw, (bytes, str)):
            return None  # 0: unknown, or a stale outcome
        try:
            return parse_state(name, raw, description)
        except CorruptStateError as exc:
            self._call("reset", self._part(name), [name], [name, str(exc)])
            return None

    def _boundary(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except (RedisError, RedisClusterException) as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: Union[RedisError, RedisClusterException]) -> BackendError:
        text = str(exc)
        if isinstance(exc, AuthenticationError) or text.startswith(("NOAUTH", "WRONGPASS")):
            return BackendUnavailableError(
                f"authentication failed for Redis at {self._address}: {text}")
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, ClusterDownError,
                            RedisClusterException)):
            return BackendUnavailableError(f"cannot reach Redis at {self._address}: {text}")
        return BackendError(f"Redis at {self._address} failed: {text}")


def _history_args(part: PartitionKeys) -> list[ScriptArg]:
    """The run-history arguments of the scripts that record attempts (history_args)."""
    return [part.history_prefix, part.history, GROUP_HISTORY_LIMIT, HISTORY_ERROR_BYTES]


def _definition_name(definition: JobDefinition) -> str:
    return definition.name


def _lease_name(lease: Lease) -> str:
    return lease.job_name


def _outcome_name(outcome: Outcome) -> str:
    return outcome.lease.job_name
