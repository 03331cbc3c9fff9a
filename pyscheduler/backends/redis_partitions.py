"""How a group's keys are spread over Redis Cluster slots: its *partitions*.

Every key of one partition carries the same hash tag, so it lives in one Cluster slot and
every script, which names the keys of one partition only, runs on one node. With one
partition (the default) the tag is ``{pfx}``, the layout of every earlier version. With
``P`` partitions, partition 0 keeps ``{pfx}`` and partition ``i`` takes ``{pfx#k}`` for the
smallest ``k`` whose slot falls in the ``i``-th of ``P`` equal ranges of the slot space (the
ranges in order, skipping the one of ``{pfx}``'s slot): ``redis-cli --cluster create`` gives
each master one contiguous range, so ``P`` partitions over ``P`` masters put one on each.

A job belongs to partition ``crc32(name) % P``; the group-wide keys (live instances, the
``members`` change counter) live in partition 0.

The number of partitions is part of a group's identity: a job stored under one count is
looked for elsewhere under another, so a scheduler configured with another count than the
group's would run every moved job a second time. Each partition holds a record,
``<tag>:layout``, naming its group, its index and the count, written by the first scheduler
to open the group; a scheduler configured otherwise refuses to open
(:func:`layout_mismatch`), and a group stored before partitions existed counts as one.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Optional

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..config import MAX_PARTITIONS

__all__ = ["MAX_PARTITIONS", "PartitionKeys", "check_partitions", "layout_mismatch",
           "layout_record", "partition_index", "partition_tags", "stored_partitions"]

@dataclass(frozen=True)
class PartitionKeys:
    """The key names of one partition (``tag`` is ``{pfx}`` or ``{pfx#k}``)."""

    index: int
    tag: str

    @property
    def job_prefix(self) -> str:
        return f"{self.tag}:job:"

    @property
    def lease_prefix(self) -> str:
        return f"{self.tag}:lease:"

    @property
    def common(self) -> list[str]:
        """The keys every script is passed first: the due index, the job set, tombstones."""
        return [f"{self.tag}:due", f"{self.tag}:jobs", f"{self.tag}:removed"]

    @property
    def epochs(self) -> str:
        return f"{self.tag}:epochs"

    @property
    def history_prefix(self) -> str:
        return f"{self.tag}:history:"

    @property
    def history(self) -> str:
        """The partition's own group-wide history list (the group's is their merge)."""
        return f"{self.tag}:history"

    @property
    def layout(self) -> str:
        return f"{self.tag}:layout"


def check_partitions(key_prefix: str, partitions: int) -> None:
    """:raises ValueError: ``partitions`` is not in 1..MAX_PARTITIONS, or ``key_prefix``
    holds a brace, which would cut the hash tags of partitions short."""
    if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be an integer from 1 to {MAX_PARTITIONS}, "
                         f"got {partitions!r}")
    if partitions > 1 and ("{" in key_prefix or "}" in key_prefix):
        raise ValueError(f"a key_prefix split into partitions must hold no brace, "
                         f"got {key_prefix!r}")


def partition_tags(key_prefix: str, partitions: int) -> list[PartitionKeys]:
    """The partitions of the group ``key_prefix``, in index order (see the module doc)."""
    first = "{" + key_prefix + "}"
    if partitions == 1:
        return [PartitionKeys(0, first)]

    def range_of(slot: int) -> int:
        return slot * partitions // REDIS_CLUSTER_HASH_SLOTS

    taken = range_of(key_slot(key_prefix.encode("utf-8")))
    keys = [PartitionKeys(0, first)]
    suffix = 0
    for wanted in (r for r in range(partitions) if r != taken):
        while True:
            suffix += 1
            tag = f"{key_prefix}#{suffix}"
            if range_of(key_slot(tag.encode("utf-8"))) == wanted:
                break
        keys.append(PartitionKeys(len(keys), "{" + tag + "}"))
        suffix = 0
    return keys


def partition_index(name: str, partitions: int) -> int:
    """The partition of job ``name``: stable across processes, versions and hosts."""
    if partitions == 1:
        return 0
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) % partitions


def layout_record(key_prefix: str, index: int, partitions: int) -> str:
    """What ``<tag>:layout`` holds for partition ``index`` of the group."""
    return json.dumps({"v": 1, "group": key_prefix, "partition": index,
                       "partitions": partitions}, sort_keys=True, separators=(",", ":"))


def stored_partitions(raw: object) -> Optional[tuple[str, int, int]]:
    """``(group, index, partitions)`` from a stored layout record; ``None`` if it is not of
    our form (it is never evaluated)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        values = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(values, dict) or values.get("v") != 1:
        return None
    group, index, count = values.get("group"), values.get("partition"), values.get("partitions")
    if type(group) is not str or type(index) is not int or type(count) is not int:
        return None
    return group, index, count


def layout_mismatch(key_prefix: str, index: int, partitions: int,
                    raw: object) -> Optional[str]:
    """Why the stored layout record ``raw`` of partition ``index`` forbids opening the group
    with ``partitions``; ``None`` if it agrees."""
    stored = stored_partitions(raw)
    if stored is None:
        return f"its layout record holds a value not of our form ({raw!r:.80})"
    group, stored_index, count = stored
    if group != key_prefix or stored_index != index:
        return (f"its keys are partition {stored_index} of the group {group!r}: choose "
                f"another key_prefix")
    if count != partitions:
        return (f"the group is stored in {count} partition(s), not {partitions}: changing "
                f"the number of partitions of a group would run its moved jobs twice; "
                f"configure partitions={count}, or stop every instance and start the group "
                f"afresh under a new key_prefix")
    return None
