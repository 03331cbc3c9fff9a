"""Owner tokens: the name a scheduler gives each claim, and the instance id read back from it.

A scheduler claims every occurrence under a fresh token ``<instance_id>:<12 hex>:<n>``: the
instance's id, a nonce made at each start (so that a restarted instance, or copies of one
scheduler object started in forked children, never take each other's claims for their own),
and a claim counter. The backend stores the token as the lease's owner and never interprets
it; operators' tools (:class:`~pyscheduler.Control`) read the instance back from it. This
is not an authentication scheme: anything may write a backend, so a token not of this form
reads as its own instance id, as plain text.
"""

from __future__ import annotations

import re
import uuid

__all__ = ["instance_of", "owner_prefix"]

_TOKEN = re.compile(r"(.+):[0-9a-f]{12}:[0-9]+", re.DOTALL)


def owner_prefix(instance_id: str) -> str:
    """A new token prefix for ``instance_id``: the tokens of its claims append a counter."""
    return f"{instance_id}:{uuid.uuid4().hex[:12]}:"


def instance_of(owner: str) -> str:
    """The instance id in an owner token made from :func:`owner_prefix`; a token of another
    form is returned as it is (``""`` stays ``""``)."""
    match = _TOKEN.fullmatch(owner)
    return match.group(1) if match else owner
