"""Tests for pyscheduler.retry: delay sequences, jitter, validation, should_retry, to_dict."""

from __future__ import annotations

import json
import pickle
import random
from datetime import timedelta

import pytest

from pyscheduler.errors import ConfigError
from pyscheduler.retry import RetryPolicy, RetryStrategy


def delays(policy: RetryPolicy, count: int) -> list[float]:
    return [policy.delay(n) for n in range(1, count + 1)]


def test_default() -> None:
    policy = RetryPolicy.default()

    assert policy == RetryPolicy(3, 1.0, 30.0, 2.0, RetryStrategy.EXPONENTIAL)
    assert (policy.max_retries, policy.initial_interval, policy.max_interval) == (3, 1.0, 30.0)
    assert policy.strategy is RetryStrategy.EXPONENTIAL
    assert delays(policy, 3) == [1.0, 2.0, 4.0]


def test_exponential_sequence_is_capped() -> None:
    policy = RetryPolicy(initial_interval=1, multiplier=2)

    assert delays(policy, 8) == [1, 2, 4, 8, 16, 30, 30, 30]


def test_exponential_with_other_multiplier() -> None:
    policy = RetryPolicy(initial_interval=0.5, max_interval=100, multiplier=3)

    assert delays(policy, 5) == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_exponential_multiplier_one_is_constant() -> None:
    assert delays(RetryPolicy(initial_interval=2, multiplier=1), 3) == [2, 2, 2]


def test_linear_sequence() -> None:
    policy = RetryPolicy(initial_interval=5, max_interval=60, strategy=RetryStrategy.LINEAR)

    assert delays(policy, 3) == [5, 10, 15]
    assert policy.delay(12) == 60
    assert policy.delay(13) == 60


def test_fixed_sequence() -> None:
    policy = RetryPolicy(initial_interval=10, max_interval=10, strategy=RetryStrategy.FIXED)

    assert delays(policy, 3) == [10, 10, 10]


@pytest.mark.parametrize("strategy", list(RetryStrategy))
def test_huge_attempt_numbers_are_capped_without_overflow(strategy: RetryStrategy) -> None:
    policy = RetryPolicy(initial_interval=1, max_interval=30, multiplier=10, strategy=strategy)

    assert policy.delay(10**6) == (1.0 if strategy is RetryStrategy.FIXED else 30.0)
    assert policy.delay(10**400) == (1.0 if strategy is RetryStrategy.FIXED else 30.0)


def test_intervals_as_timedelta_are_stored_as_seconds() -> None:
    policy = RetryPolicy(initial_interval=timedelta(milliseconds=250), max_interval=timedelta(1))

    assert policy.initial_interval == 0.25
    assert policy.max_interval == 86_400.0
    assert isinstance(policy.initial_interval, float)


def test_positional_construction() -> None:
    policy = RetryPolicy(5, 2, 60, 3.0, RetryStrategy.LINEAR, 0.1, (OSError,))

    assert policy.max_retries == 5
    assert policy.strategy is RetryStrategy.LINEAR
    assert policy.jitter == 0.1
    assert policy.retry_on == (OSError,)


@pytest.mark.parametrize(
    ("text", "strategy"),
    [
        ("exponential", RetryStrategy.EXPONENTIAL),
        ("linear", RetryStrategy.LINEAR),
        ("fixed", RetryStrategy.FIXED),
        ("Linear", RetryStrategy.LINEAR),
    ],
)
def test_strategy_strings(text: str, strategy: RetryStrategy) -> None:
    assert RetryPolicy(strategy=text).strategy is strategy


def test_jitter_stays_within_bounds_and_varies() -> None:
    # Given ±10 % jitter on a 10 s fixed delay, and a seeded generator
    policy = RetryPolicy(
        initial_interval=10, max_interval=100, strategy=RetryStrategy.FIXED, jitter=0.1
    )
    rng = random.Random(1234)

    # When drawing many delays
    drawn = [policy.delay(1, rng) for _ in range(500)]

    # Then each lies within ±10 % and they differ
    assert all(9.0 <= d <= 11.0 for d in drawn)
    assert len(set(drawn)) > 400
    assert min(drawn) < 9.2 and max(drawn) > 10.8


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(jitter=0.5)

    first = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    again = [policy.delay(n, random.Random(7)) for n in range(1, 6)]

    assert first == again


def test_jitter_never_exceeds_the_cap() -> None:
    # Given a delay already at the cap, jitter may only lower it
    policy = RetryPolicy(initial_interval=1, max_interval=4, jitter=0.9)
    rng = random.Random(0)

    drawn = [policy.delay(10, rng) for _ in range(500)]

    assert all(0.0 <= d <= 4.0 for d in drawn)
    assert max(drawn) == 4.0


def test_jitter_uses_the_module_rng_by_default() -> None:
    policy = RetryPolicy(initial_interval=10, max_interval=10, jitter=0.5)

    assert all(5.0 <= policy.delay(1) <= 10.0 for _ in range(100))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": 2.0}, "max_retries"),
        ({"max_retries": "3"}, "max_retries"),
        ({"initial_interval": 0}, "initial_interval"),
        ({"initial_interval": -1}, "initial_interval"),
        ({"initial_interval": "1"}, "initial_interval"),
        ({"initial_interval": float("nan")}, "initial_interval"),
        ({"initial_interval": timedelta(0)}, "initial_interval"),
        ({"max_interval": 0.5}, "max_interval"),
        ({"max_interval": None}, "max_interval"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"multiplier": True}, "multiplier"),
        ({"multiplier": float("inf")}, "multiplier"),
        ({"strategy": "random"}, "strategy"),
        ({"strategy": 3}, "strategy"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": "0.1"}, "jitter"),
        ({"retry_on": (ValueError, "KeyError")}, "retry_on"),
        ({"retry_on": (int,)}, "retry_on"),
        ({"retry_on": "ValueError"}, "retry_on"),
    ],
)
def test_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0, "1"])
def test_delay_rejects_bad_attempts(attempt: object) -> None:
    with pytest.raises(ConfigError) as caught:
        RetryPolicy().delay(attempt)  # type: ignore[arg-type]

    assert caught.value.field == "attempt"


def test_should_retry_counts_attempts() -> None:
    # Given three retries: attempts 1-3 failing are retried, the 4th is the last
    policy = RetryPolicy(max_retries=3)
    error = RuntimeError("boom")

    assert [policy.should_retry(n, error) for n in (1, 2, 3, 4, 5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert RetryPolicy(max_retries=0).should_retry(1, error) is False


def test_should_retry_filters_by_exception_type() -> None:
    policy = RetryPolicy(retry_on=(ConnectionError, TimeoutError))

    assert policy.should_retry(1, ConnectionResetError())  # a subclass
    assert policy.should_retry(1, TimeoutError())
    assert not policy.should_retry(1, ValueError())
    # a timeout (no exception) is always retryable
    assert policy.should_retry(1, None)
    assert not policy.should_retry(4, None)


def test_should_retry_defaults_to_everything() -> None:
    assert RetryPolicy().should_retry(1, KeyboardInterrupt())


def test_retry_on_accepts_a_bare_class_or_a_list() -> None:
    assert RetryPolicy(retry_on=OSError).retry_on == (OSError,)  # type: ignore[arg-type]
    assert RetryPolicy(retry_on=[OSError, KeyError]).retry_on == (  # type: ignore[arg-type]
        OSError,
        KeyError,
    )


def test_to_dict_is_json_serialisable() -> None:
    policy = RetryPolicy(
        2, timedelta(seconds=3), 40, 1.5, "linear", 0.2, (ConnectionError, ConfigError)
    )

    data = policy.to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data == {
        "max_retries": 2,
        "initial_interval": 3.0,
        "max_interval": 40.0,
        "multiplier": 1.5,
        "strategy": "linear",
        "jitter": 0.2,
        "retry_on": ["builtins.ConnectionError", "pyscheduler.errors.ConfigError"],
    }


def test_policy_is_an_immutable_hashable_value() -> None:
    policy = RetryPolicy(jitter=0.1)

    assert policy == RetryPolicy(jitter=0.1)
    assert hash(policy) == hash(RetryPolicy(jitter=0.1))
    assert pickle.loads(pickle.dumps(policy)) == policy
    with pytest.raises(AttributeError):
        policy.max_retries = 5  # type: ignore[misc]
