"""How failed attempts are retried: :class:`RetryPolicy` and its :class:`RetryStrategy`.

A policy is a value: it answers "retry this failure?" and "after how long?", and keeps no
count of attempts itself (the scheduler stores the attempt number with the job's state). It
does not sleep, and it does not decide what a failure is: that is the executor's business.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Union

from ._time import Duration, to_seconds
from .errors import ConfigError

__all__ = ["RetryPolicy", "RetryStrategy"]

#: Jitter source when the caller passes none; seeded from the OS, shared by every policy.
_default_rng = random.Random()


class RetryStrategy(enum.Enum):
    """How the delay grows from one retry to the next."""

    #: ``initial_interval * multiplier ** (n - 1)``
    EXPONENTIAL = "exponential"
    #: ``initial_interval * n``
    LINEAR = "linear"
    #: ``initial_interval`` every time
    FIXED = "fixed"


def _real(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(field, f"must be finite, not {value!r}")
    return number


def _duration(value: object, field: str) -> float:
    try:
        return to_seconds(value, field)  # type: ignore[arg-type]  # checked by to_seconds
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, str(exc)) from exc


def _attempt(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("attempt", f"must be an int >= 1, not {value!r}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, how often, and after what delay.

    Retry ``n`` (1 for the first retry) waits ``delay(n)`` seconds:
    ``initial_interval * multiplier ** (n - 1)`` (exponential), ``initial_interval * n``
    (linear) or ``initial_interval`` (fixed), then moved by up to ``±jitter`` of itself, and
    always capped at ``max_interval``.

    :param max_retries: retries after the first attempt; 0 disables retrying.
    :param initial_interval: the first delay, as seconds or a ``timedelta``; stored as float
        seconds.
    :param max_interval: the cap on every delay; stored as float seconds.
    :param multiplier: growth factor of the exponential strategy, at least 1.
    :param strategy: a :class:`RetryStrategy` or its value (``"exponential"``, ``"linear"``,
        ``"fixed"``); stored as a :class:`RetryStrategy`.
    :param jitter: the fraction each delay is randomly moved by, ``0 <= jitter < 1``.
    :param retry_on: the exception types that are retried; any other fails at once.
    :raises ConfigError: a field is invalid; ``field`` names it.
    """

    max_retries: int = 3
    initial_interval: Duration = 1.0
    max_interval: Duration = 30.0
    multiplier: float = 2.0
    strategy: Union[RetryStrategy, str] = RetryStrategy.EXPONENTIAL
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (BaseException,)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ConfigError("max_retries", f"must be an int >= 0, not {self.max_retries!r}")
        initial = _duration(self.initial_interval, "initial_interval")
        if initial <= 0:
            raise ConfigError(
                "initial_interval", f"must be positive, not {self.initial_interval!r}"
            )
        set_(self, "initial_interval", initial)
        maximum = _duration(self.max_interval, "max_interval")
        if maximum < initial:
            raise ConfigError(
                "max_interval",
                f"must be at least initial_interval ({initial:g} s), not {self.max_interval!r}",
            )
        set_(self, "max_interval", maximum)
        multiplier = _real(self.multiplier, "multiplier")
        if multiplier < 1.0:
            raise ConfigError("multiplier", f"must be >= 1.0, not {self.multiplier!r}")
        set_(self, "multiplier", multiplier)
        set_(self, "strategy", self._strategy(self.strategy))
        jitter = _real(self.jitter, "jitter")
        if not 0.0 <= jitter < 1.0:
            raise ConfigError("jitter", f"must be a fraction in [0, 1), not {self.jitter!r}")
        set_(self, "jitter", jitter)
        set_(self, "retry_on", self._exception_types(self.retry_on))

    @staticmethod
    def _strategy(value: object) -> RetryStrategy:
        if isinstance(value, RetryStrategy):
            return value
        if isinstance(value, str):
            for strategy in RetryStrategy:
                if strategy.value == value.lower():
                    return strategy
        choices = ", ".join(repr(strategy.value) for strategy in RetryStrategy)
        raise ConfigError("strategy", f"unknown strategy {value!r}; expected one of {choices}")

    @staticmethod
    def _exception_types(value: object) -> tuple[type[BaseException], ...]:
        # A bare class is the common slip for a one-element tuple; take it as one.
        items = (value,) if isinstance(value, type) else value
        if not isinstance(items, (tuple, list)) or not all(
            isinstance(item, type) and issubclass(item, BaseException) for item in items
        ):
            raise ConfigError("retry_on", f"must be a tuple of exception types, not {value!r}")
        return tuple(items)

    @classmethod
    def default(cls) -> RetryPolicy:
        """3 retries, exponential from 1 s doubling up to 30 s, no jitter."""
        return cls()

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt``.

        :param attempt: the retry's number, 1 for the first retry.
        :param rng: the source of jitter (default: a module-level ``random.Random``); pass a
            seeded one for reproducible delays.
        :returns: the delay in seconds, in ``[0, max_interval]``.
        :raises ConfigError: ``attempt`` is not an int >= 1.
        """
        attempt = _attempt(attempt)
        initial = to_seconds(self.initial_interval, "initial_interval")
        maximum = to_seconds(self.max_interval, "max_interval")
        strategy = self._strategy(self.strategy)
        if strategy is RetryStrategy.FIXED:
            base = initial
        elif strategy is RetryStrategy.LINEAR:
            # Compare before multiplying: a huge attempt would overflow the float.
            base = maximum if attempt > maximum / initial else initial * attempt
        elif self.multiplier == 1.0:
            base = initial
        elif attempt - 1 > math.log(maximum / initial) / math.log(self.multiplier) + 1e-9:
            # Past the cap already; the power itself could overflow.
            base = maximum
        else:
            base = initial * self.multiplier ** (attempt - 1)
        if self.jitter:
            base *= 1.0 + (rng or _default_rng).uniform(-self.jitter, self.jitter)
        return max(0.0, min(base, maximum))

    def should_retry(self, attempt_that_failed: int, error: BaseException | None) -> bool:
        """Whether a failed attempt gets another try.

        :param attempt_that_failed: the failed attempt's number, 1 for the first run; its
            retry would be retry number ``attempt_that_failed``.
        :param error: what the attempt raised, or ``None`` for a timeout (always retryable).
        :returns: ``True`` if retries remain and ``error`` is an instance of ``retry_on``.
        :raises ConfigError: ``attempt_that_failed`` is not an int >= 1.
        """
        if _attempt(attempt_that_failed) > self.max_retries:
            return False
        return error is None or isinstance(error, self.retry_on)

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable form; ``retry_on`` as qualified class names."""
        return {
            "max_retries": self.max_retries,
            "initial_interval": to_seconds(self.initial_interval, "initial_interval"),
            "max_interval": to_seconds(self.max_interval, "max_interval"),
            "multiplier": self.multiplier,
            "strategy": self._strategy(self.strategy).value,
            "jitter": self.jitter,
            "retry_on": [f"{cls.__module__}.{cls.__qualname__}" for cls in self.retry_on],
        }
