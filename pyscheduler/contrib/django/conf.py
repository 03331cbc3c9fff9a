"""The ``PYSCHEDULER`` setting of a Django project, read and validated in one place.

``settings.PYSCHEDULER`` is a dict of :class:`~pyscheduler.SchedulerConfig` fields (either
case) plus two keys of this integration: ``AUTOSTART`` (also start the scheduler in the web
server's worker processes; default ``False``) and ``STOP_TIMEOUT`` (how long a graceful stop
waits for running handlers; default 25 s, below gunicorn's 30 s ``graceful_timeout``). This
module only reads settings: it builds no scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from django.conf import settings as django_settings  # type: ignore[import-untyped]

from ..._time import to_seconds
from ...config import SchedulerConfig
from ...errors import ConfigError

__all__ = ["DEFAULT_STOP_TIMEOUT", "DjangoSettings", "read_settings", "wants_autostart"]

DEFAULT_STOP_TIMEOUT = 25.0

_OWN_KEYS = ("autostart", "stop_timeout")


@dataclass(frozen=True)
class DjangoSettings:
    """What ``settings.PYSCHEDULER`` says.

    :ivar config: the scheduler's configuration.
    :ivar autostart: whether web worker processes start the scheduler too.
    :ivar stop_timeout: seconds a graceful stop waits for running handlers.
    """

    config: SchedulerConfig
    autostart: bool = False
    stop_timeout: float = DEFAULT_STOP_TIMEOUT


def read_settings(settings: Optional[object] = None) -> DjangoSettings:
    """Read ``PYSCHEDULER`` from ``settings`` (default: ``django.conf.settings``).

    :raises ConfigError: a setting is invalid; its ``field`` is the setting as written in
        settings.py, such as ``PYSCHEDULER['LOCK_TTL']``.
    """
    settings = django_settings if settings is None else settings
    raw = getattr(settings, "PYSCHEDULER", {})
    try:
        config = SchedulerConfig.from_mapping(settings, ignore=_OWN_KEYS)
    except ConfigError as exc:
        # The dataclass names its field (lock_ttl); the user wrote PYSCHEDULER['LOCK_TTL'].
        raise ConfigError(_setting_name(exc.field, raw), exc.message) from None
    autostart = _lookup(raw, "autostart", False)
    if not isinstance(autostart, bool):
        raise ConfigError(_setting_name("autostart", raw), f"must be True or False, got "
                          f"{autostart!r}")
    return DjangoSettings(config, autostart, _stop_timeout(raw))


def wants_autostart(settings: Optional[object] = None) -> bool:
    """Whether ``PYSCHEDULER['AUTOSTART']`` is true, without validating anything else.

    Lets a web worker that does not run the scheduler serve even when another setting is
    wrong (``manage.py check`` reports that).
    """
    raw = getattr(django_settings if settings is None else settings, "PYSCHEDULER", {})
    return isinstance(raw, Mapping) and _lookup(raw, "autostart", False) is True


def _stop_timeout(raw: Mapping[str, object]) -> float:
    value = _lookup(raw, "stop_timeout", DEFAULT_STOP_TIMEOUT)
    try:
        seconds = to_seconds(value, "STOP_TIMEOUT")  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(_setting_name("stop_timeout", raw), str(exc)) from None
    if seconds < 0:
        raise ConfigError(_setting_name("stop_timeout", raw), f"must not be negative, got "
                          f"{value!r}")
    return seconds


def _lookup(raw: Mapping[str, object], name: str, default: object) -> object:
    for key, value in raw.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return default


def _setting_name(field: str, raw: object) -> str:
    if field.startswith("PYSCHEDULER"):
        return field  # already a setting's name: PYSCHEDULER, PYSCHEDULER['X'], PYSCHEDULER_X
    if isinstance(raw, Mapping):
        for key in raw:
            if isinstance(key, str) and key.lower() == field:
                return f"PYSCHEDULER[{key!r}]"
    return f"PYSCHEDULER[{field.upper()!r}]"
