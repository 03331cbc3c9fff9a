"""SchedulerConfig: every tunable of a scheduler, validated once, from code, a mapping or env.

A config is a frozen value. Durations are float seconds (a ``timedelta`` is accepted and
converted). ``from_mapping`` reads Flask/Django settings (``PYSCHEDULER_TICK_INTERVAL`` or
``tick_interval``); ``from_env`` reads ``PYSCHEDULER_*`` environment variables.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Collection, Mapping, Optional, Union

from ._time import to_seconds
from .errors import ConfigError

__all__ = ["SchedulerConfig"]

_BACKEND_TYPES = ("memory", "redis")
#: The most run-history records a job may keep: enough for any operator to read.
_MAX_HISTORY = 10_000
#: The most hash-tag partitions a group can have: more would only add script calls per peek,
#: a Redis Cluster having far fewer masters.
MAX_PARTITIONS = 256
_ENV_PREFIX = "PYSCHEDULER_"


@dataclass(frozen=True)
class SchedulerConfig:
    """How a scheduler runs. Every field has a default; see the README's configuration table.

    :param tick_interval: the longest the tick thread sleeps; bounds how late changes made by
        other instances (pause, run-now, retries) are noticed.
    :param max_concurrent: worker threads, i.e. handlers running at once.
    :param lock_ttl: lease time-to-live: how long a crashed holder keeps an occurrence.
    :param lock_refresh_interval: how often leases are extended; below ``lock_ttl``.
    :param backend_type: ``"memory"`` or ``"redis"`` (used by ``Scheduler.from_config``).
    :param redis_addr: ``host:port`` of Redis, with ``redis_password`` and ``redis_db``.
    :param redis_url: a ``redis://`` or ``rediss://`` URL; wins over ``redis_addr``.
    :param key_prefix: prefix of every Redis key; schedulers sharing it form one group.
    :param redis_cluster: ``redis_url`` or ``redis_addr`` names a node of a Redis Cluster.
    :param partitions: how many hash-tag partitions the group's jobs are spread over on
        Redis, so that a Redis Cluster shares them among its masters; every instance of a
        group must say the same (another count is refused when the scheduler starts).
    :param timezone: default IANA zone for cron jobs declared through ``Scheduler.cron``.
    :param misfire_grace_time: default for jobs that set none; ``None``: no limit.
    :param instance_id: this instance's name in logs and backend records (default: host:pid).
    :param takeover_delay: how overdue an occurrence owned by another live instance must be
        before this one takes it over (its owner crashed, is busy, or lacks the job); ``0``:
        every instance claims every occurrence on time, as peers racing for it.
    :param history_limit: finished attempts of each job kept in the backend's run history
        (``Control.history``); ``0`` keeps none.
    :raises ConfigError: a field is invalid; the error names it.
    """

    tick_interval: Union[float, timedelta] = 5.0
    max_concurrent: int = 10
    lock_ttl: Union[float, timedelta] = 30.0
    lock_refresh_interval: Union[float, timedelta] = 10.0
    backend_type: str = "memory"
    redis_addr: str = "localhost:6379"
    redis_password: str = ""
    redis_db: int = 0
    redis_url: Optional[str] = None
    key_prefix: str = "pyscheduler"
    redis_cluster: bool = False
    partitions: int = 1
    timezone: str = "UTC"
    misfire_grace_time: Optional[Union[float, timedelta]] = None
    instance_id: Optional[str] = None
    takeover_delay: Union[float, timedelta] = 1.0
    history_limit: int = 50

    def __post_init__(self) -> None:
        for name in ("tick_interval", "lock_ttl", "lock_refresh_interval"):
            object.__setattr__(self, name, _positive_seconds(name, getattr(self, name)))
        if self.misfire_grace_time is not None:
            object.__setattr__(self, "misfire_grace_time",
                               _positive_seconds("misfire_grace_time", self.misfire_grace_time))
        object.__setattr__(self, "takeover_delay",
                           _seconds_at_least_zero("takeover_delay", self.takeover_delay))
        _check_int("max_concurrent", self.max_concurrent, minimum=1)
        _check_int("redis_db", self.redis_db, minimum=0)
        _check_int("history_limit", self.history_limit, minimum=0)
        _check_int("partitions", self.partitions, minimum=1)
        if self.partitions > MAX_PARTITIONS:  # each costs a script call per peek
            raise ConfigError("partitions",
                              f"must be at most {MAX_PARTITIONS}, got {self.partitions}")
        if type(self.redis_cluster) is not bool:
            raise ConfigError("redis_cluster", f"must be True or False, "
                                               f"got {self.redis_cluster!r}")
        if self.history_limit > _MAX_HISTORY:  # each record is kept in the backend's memory
            raise ConfigError("history_limit",
                              f"must be at most {_MAX_HISTORY}, got {self.history_limit}")
        if self.lock_refresh_interval >= self.lock_ttl:  # type: ignore[operator]
            raise ConfigError(
                "lock_refresh_interval",
                f"must be shorter than lock_ttl ({self.lock_ttl} s), "
                f"got {self.lock_refresh_interval} s",
            )
        if self.backend_type not in _BACKEND_TYPES:
            raise ConfigError("backend_type", f"must be one of {_BACKEND_TYPES}, "
                                              f"got {self.backend_type!r}")
        for name in ("redis_addr", "redis_password", "key_prefix", "timezone"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(name, f"must be a string, got {getattr(self, name)!r}")
        if not self.key_prefix:
            raise ConfigError("key_prefix", "must not be empty")
        if self.redis_url is not None and not isinstance(self.redis_url, str):
            raise ConfigError("redis_url", f"must be a string, got {self.redis_url!r}")
        if self.instance_id is not None and not (
            isinstance(self.instance_id, str) and self.instance_id
        ):
            raise ConfigError("instance_id",
                              f"must be a non-empty string, got {self.instance_id!r}")
        _check_timezone(self.timezone)

    @classmethod
    def default(cls) -> SchedulerConfig:
        """The defaults: a 5 s tick, 10 workers, 30 s leases refreshed every 10 s, in memory."""
        return cls()

    @classmethod
    def from_mapping(cls, settings: object, *,
                     ignore: Collection[str] = ()) -> SchedulerConfig:
        """Build from application settings.

        ``settings`` is a mapping (Flask's ``app.config``, a dict) or an object whose
        attributes are the settings (``django.conf.settings``). Keys are read in two forms:

        - a field name as it is (``tick_interval``) or upper-cased with the ``PYSCHEDULER_``
          prefix (``PYSCHEDULER_TICK_INTERVAL``, Flask style); other keys are ignored, so a
          whole ``app.config`` can be passed;
        - a ``PYSCHEDULER`` dict whose keys are field names in either case (Django style:
          ``PYSCHEDULER = {"BACKEND_TYPE": "redis", ...}``).

        :param ignore: more setting names (lower case, like ``"autostart"``) that the caller
            reads itself; they are neither fields nor an error.
        :raises ConfigError: an unknown ``PYSCHEDULER_*`` key or ``PYSCHEDULER`` dict key, a
            ``PYSCHEDULER`` setting that is not a dict, or an invalid value.
        """
        mapping = _settings_mapping(settings)
        fields = {f.name for f in dataclasses.fields(cls)}
        known = fields | set(ignore)
        values: dict[str, object] = {}
        for key, value in mapping.items():
            if not isinstance(key, str):
                continue
            if key == "PYSCHEDULER":
                values.update(_nested_settings(value, fields, known))
                continue
            if key.startswith(_ENV_PREFIX):
                name = key[len(_ENV_PREFIX):].lower()
                if name not in known:
                    raise ConfigError(key, f"unknown setting; known: {sorted(fields)}")
            elif key in fields:
                name = key
            else:
                continue
            if name in fields:
                values[name] = value
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> SchedulerConfig:
        """Build from ``PYSCHEDULER_*`` environment variables (``PYSCHEDULER_MAX_CONCURRENT=4``)."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(_ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse_env(field.name, raw)
        return cls(**values)  # type: ignore[arg-type]

    # Typed views: __post_init__ normalised the durations to float seconds.
    @property
    def tick_seconds(self) -> float:
        """``tick_interval`` in seconds."""
        return float(self.tick_interval)  # type: ignore[arg-type]

    @property
    def lock_ttl_seconds(self) -> float:
        """``lock_ttl`` in seconds."""
        return float(self.lock_ttl)  # type: ignore[arg-type]

    @property
    def refresh_seconds(self) -> float:
        """``lock_refresh_interval`` in seconds."""
        return float(self.lock_refresh_interval)  # type: ignore[arg-type]

    @property
    def takeover_seconds(self) -> float:
        """``takeover_delay`` in seconds."""
        return float(self.takeover_delay)  # type: ignore[arg-type]

    @property
    def misfire_grace_seconds(self) -> Optional[float]:
        """``misfire_grace_time`` in seconds, or ``None``."""
        grace = self.misfire_grace_time
        return None if grace is None else float(grace)  # type: ignore[arg-type]


_INT_FIELDS = ("max_concurrent", "redis_db", "history_limit", "partitions")
_BOOL_FIELDS = {"redis_cluster": {"1": True, "true": True, "yes": True, "on": True,
                                  "0": False, "false": False, "no": False, "off": False}}
_OPTIONAL_FIELDS = ("redis_url", "misfire_grace_time", "instance_id")
_FLOAT_FIELDS = ("tick_interval", "lock_ttl", "lock_refresh_interval", "misfire_grace_time",
                 "takeover_delay")


def _settings_mapping(settings: object) -> Mapping[str, object]:
    if isinstance(settings, Mapping):
        wrapped = settings.get("_wrapped")
        if wrapped is not None and not any(
                isinstance(key, str) and key.startswith("PYSCHEDULER") for key in settings):
            # ``django.conf.settings.__dict__``: the settings live on the wrapped object.
            return _settings_mapping(wrapped)
        return settings
    names = [name for name in dir(settings) if name.startswith("PYSCHEDULER")]
    if not names and not hasattr(settings, "__dict__"):
        raise ConfigError("settings", "expected a mapping (Flask's app.config, a dict) or a "
                          "settings object (django.conf.settings), got "
                          f"{type(settings).__name__}")
    return {name: getattr(settings, name) for name in names}


def _nested_settings(value: object, fields: set[str], known: set[str]) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError("PYSCHEDULER", "must be a dict of settings, e.g. "
                          f"{{'BACKEND_TYPE': 'redis'}}; got {type(value).__name__}")
    values: dict[str, object] = {}
    for key, item in value.items():
        name = key.lower() if isinstance(key, str) else None
        if name is None or name not in known:
            raise ConfigError(f"PYSCHEDULER[{key!r}]", "unknown setting; known: "
                              f"{sorted(k.upper() for k in known)} (either case)")
        if name in fields:
            values[name] = item
    return values


def _parse_env(name: str, raw: str) -> object:
    if name in _OPTIONAL_FIELDS and raw.strip() in ("", "none", "None"):
        return None
    if name in _BOOL_FIELDS:
        flag = _BOOL_FIELDS[name].get(raw.strip().lower())
        if flag is None:
            raise ConfigError(name, f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a boolean "
                              "(1/0, true/false, yes/no, on/off)")
        return flag
    try:
        if name in _INT_FIELDS:
            return int(raw)
        if name in _FLOAT_FIELDS:
            return float(raw)
    except ValueError:
        raise ConfigError(name, f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a number") from None
    return raw


def _positive_seconds(name: str, value: object) -> float:
    seconds = _seconds(name, value)
    if seconds <= 0:
        raise ConfigError(name, f"must be positive, got {value!r}")
    return seconds


def _seconds_at_least_zero(name: str, value: object) -> float:
    seconds = _seconds(name, value)
    if seconds < 0:
        raise ConfigError(name, f"must not be negative, got {value!r}")
    return seconds


def _seconds(name: str, value: object) -> float:
    try:
        return to_seconds(value, name)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(name, str(exc)) from None


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, like "America"
        raise ConfigError("timezone", f"unknown IANA time zone {name!r}") from None
