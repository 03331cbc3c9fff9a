"""Owner tokens: made per start, and read back as the instance that made them."""

from __future__ import annotations

import pytest

from pyscheduler.identity import instance_of, owner_prefix


@pytest.mark.parametrize("instance_id", ["web-1", "host:123:abcdef", "a:b:c", "x" * 200,
                                         "héllo wörld"])
def test_a_token_reads_back_as_its_instance(instance_id):
    prefix = owner_prefix(instance_id)
    assert instance_of(f"{prefix}0") == instance_of(f"{prefix}12345") == instance_id


def test_each_start_makes_another_prefix():
    assert owner_prefix("web-1") != owner_prefix("web-1")


@pytest.mark.parametrize("owner", ["", "owner-1", "web-1:abcdef01234:1", "web-1:ABCDEF012345:1",
                                   ":abcdef012345:1", "web-1:abcdef012345:", "web-1|7"])
def test_a_token_of_another_form_reads_as_itself(owner):
    assert instance_of(owner) == owner
