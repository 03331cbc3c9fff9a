"""SchedulerConfig: defaults, normalisation, validation, and reading mappings and env."""

from __future__ import annotations

import dataclasses
import math
import os
from datetime import timedelta

import pytest

from pyscheduler import ConfigError, SchedulerConfig

ALL_ENV = {
    "PYSCHEDULER_TICK_INTERVAL": "0.5",
    "PYSCHEDULER_MAX_CONCURRENT": "4",
    "PYSCHEDULER_LOCK_TTL": "60",
    "PYSCHEDULER_LOCK_REFRESH_INTERVAL": "20.5",
    "PYSCHEDULER_BACKEND_TYPE": "redis",
    "PYSCHEDULER_REDIS_ADDR": "cache:6380",
    "PYSCHEDULER_REDIS_PASSWORD": "s3cret",
    "PYSCHEDULER_REDIS_DB": "2",
    "PYSCHEDULER_REDIS_URL": "redis://cache:6380/2",
    "PYSCHEDULER_KEY_PREFIX": "app",
    "PYSCHEDULER_TIMEZONE": "Europe/Berlin",
    "PYSCHEDULER_MISFIRE_GRACE_TIME": "2.5",
    "PYSCHEDULER_INSTANCE_ID": "web-1",
    "PYSCHEDULER_HISTORY_LIMIT": "7",
}


@pytest.fixture
def clean_environ(monkeypatch):
    """os.environ without any PYSCHEDULER_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("PYSCHEDULER_"):
            monkeypatch.delenv(name)
    return monkeypatch


# --- defaults and construction -------------------------------------------------------------


def test_defaults_match_the_documented_table():
    config = SchedulerConfig()
    assert config.tick_interval == 5
    assert config.max_concurrent == 10
    assert config.lock_ttl == 30
    assert config.lock_refresh_interval == 10
    assert config.backend_type == "memory"
    assert config.redis_addr == "localhost:6379"
    assert config.redis_password == ""
    assert config.redis_db == 0
    assert config.redis_url is None
    assert config.key_prefix == "pyscheduler"
    assert config.timezone == "UTC"
    assert config.misfire_grace_time is None
    assert config.instance_id is None
    assert config.history_limit == 50


def test_default_is_the_same_as_no_arguments():
    assert SchedulerConfig.default() == SchedulerConfig()


def test_fields_can_be_given_positionally_in_declared_order():
    config = SchedulerConfig(1, 2, 20, 5, "redis", "cache:1", "pw", 3)
    assert (config.tick_interval, config.max_concurrent, config.lock_ttl,
            config.lock_refresh_interval) == (1.0, 2, 20.0, 5.0)
    assert (config.backend_type, config.redis_addr, config.redis_password,
            config.redis_db) == ("redis", "cache:1", "pw", 3)


def test_timedelta_durations_are_normalised_to_float_seconds():
    config = SchedulerConfig(
        tick_interval=timedelta(milliseconds=250),
        lock_ttl=timedelta(minutes=1),
        lock_refresh_interval=timedelta(seconds=20),
        misfire_grace_time=timedelta(seconds=1.5),
    )
    assert config.tick_interval == 0.25
    assert config.lock_ttl == 60.0
    assert config.lock_refresh_interval == 20.0
    assert config.misfire_grace_time == 1.5
    for name in ("tick_interval", "lock_ttl", "lock_refresh_interval", "misfire_grace_time"):
        assert type(getattr(config, name)) is float, name
    assert (config.tick_seconds, config.lock_ttl_seconds, config.refresh_seconds,
            config.misfire_grace_seconds) == (0.25, 60.0, 20.0, 1.5)


def test_int_durations_are_stored_as_float():
    config = SchedulerConfig(tick_interval=2, lock_ttl=40, lock_refresh_interval=4,
                             misfire_grace_time=3)
    assert type(config.tick_interval) is float and config.tick_interval == 2.0
    assert type(config.misfire_grace_time) is float and config.misfire_grace_time == 3.0


def test_a_timedelta_config_equals_its_float_twin():
    assert SchedulerConfig(lock_ttl=timedelta(seconds=45)) == SchedulerConfig(lock_ttl=45.0)


def test_config_is_frozen():
    config = SchedulerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_concurrent = 5  # type: ignore[misc]
    assert config.max_concurrent == 10


def test_replace_validates_the_new_value_too():
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(SchedulerConfig(), max_concurrent=0)
    assert info.value.field == "max_concurrent"


# --- validation ----------------------------------------------------------------------------

INVALID = [
    ({"tick_interval": 0}, "tick_interval"),
    ({"tick_interval": -1.0}, "tick_interval"),
    ({"tick_interval": timedelta(0)}, "tick_interval"),
    ({"tick_interval": timedelta(seconds=-5)}, "tick_interval"),
    ({"tick_interval": math.nan}, "tick_interval"),
    ({"tick_interval": math.inf}, "tick_interval"),
    ({"tick_interval": "5"}, "tick_interval"),
    ({"tick_interval": True}, "tick_interval"),
    ({"tick_interval": None}, "tick_interval"),
    ({"lock_ttl": 0}, "lock_ttl"),
    ({"lock_ttl": -30}, "lock_ttl"),
    ({"lock_ttl": math.nan}, "lock_ttl"),
    ({"lock_refresh_interval": 0}, "lock_refresh_interval"),
    ({"lock_refresh_interval": -1}, "lock_refresh_interval"),
    ({"lock_refresh_interval": math.nan}, "lock_refresh_interval"),
    ({"misfire_grace_time": 0}, "misfire_grace_time"),
    ({"misfire_grace_time": -1}, "misfire_grace_time"),
    ({"misfire_grace_time": math.nan}, "misfire_grace_time"),
    ({"misfire_grace_time": "soon"}, "misfire_grace_time"),
    ({"lock_ttl": 10, "lock_refresh_interval": 10}, "lock_refresh_interval"),
    ({"lock_ttl": 5, "lock_refresh_interval": 10}, "lock_refresh_interval"),
    ({"lock_ttl": timedelta(seconds=10), "lock_refresh_interval": 10.0}, "lock_refresh_interval"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"max_concurrent": -1}, "max_concurrent"),
    ({"max_concurrent": True}, "max_concurrent"),
    ({"max_concurrent": "4"}, "max_concurrent"),
    ({"max_concurrent": 2.0}, "max_concurrent"),
    ({"redis_db": -1}, "redis_db"),
    ({"redis_db": True}, "redis_db"),
    ({"redis_db": "0"}, "redis_db"),
    ({"backend_type": "postgres"}, "backend_type"),
    ({"backend_type": "Memory"}, "backend_type"),
    ({"backend_type": ""}, "backend_type"),
    ({"redis_addr": None}, "redis_addr"),
    ({"redis_password": None}, "redis_password"),
    ({"redis_url": 6379}, "redis_url"),
    ({"key_prefix": ""}, "key_prefix"),
    ({"key_prefix": None}, "key_prefix"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": ""}, "timezone"),
    ({"timezone": "utc"}, "timezone"),
    ({"timezone": "../etc/passwd"}, "timezone"),
    ({"timezone": None}, "timezone"),
    ({"instance_id": ""}, "instance_id"),
    ({"instance_id": 7}, "instance_id"),
    ({"history_limit": -1}, "history_limit"),
    ({"history_limit": True}, "history_limit"),
    ({"history_limit": "5"}, "history_limit"),
    ({"history_limit": 1.5}, "history_limit"),
    ({"history_limit": 10_001}, "history_limit"),
]


@pytest.mark.parametrize("kwargs, field", INVALID,
                         ids=[f"{field}={kw}" for kw, field in INVALID])
def test_invalid_field_raises_config_error_naming_it(kwargs, field):
    with pytest.raises(ConfigError) as info:
        SchedulerConfig(**kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert field in str(info.value)


def test_a_zone_directory_name_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        SchedulerConfig(timezone="America")
    assert info.value.field == "timezone"


def test_valid_non_default_values_are_kept():
    config = SchedulerConfig(max_concurrent=1, redis_db=15, backend_type="redis",
                             timezone="America/New_York", instance_id="worker-3",
                             redis_url="rediss://user:pw@host:6380/1", key_prefix="x")
    assert (config.max_concurrent, config.redis_db, config.backend_type, config.timezone,
            config.instance_id, config.redis_url, config.key_prefix) == (
        1, 15, "redis", "America/New_York", "worker-3", "rediss://user:pw@host:6380/1", "x")


# --- from_mapping --------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 1, 10_000])
def test_history_limit_from_none_to_its_bound(limit):
    assert SchedulerConfig(history_limit=limit).history_limit == limit
    assert SchedulerConfig.from_mapping({"PYSCHEDULER_HISTORY_LIMIT": limit}).history_limit == limit


def test_from_mapping_reads_field_names_as_they_are():
    config = SchedulerConfig.from_mapping({"max_concurrent": 3, "tick_interval": 0.5,
                                           "timezone": "Europe/Paris"})
    assert (config.max_concurrent, config.tick_interval, config.timezone) == (
        3, 0.5, "Europe/Paris")


def test_from_mapping_reads_prefixed_upper_case_keys():
    config = SchedulerConfig.from_mapping({"PYSCHEDULER_MAX_CONCURRENT": 4,
                                           "PYSCHEDULER_LOCK_TTL": timedelta(minutes=2),
                                           "PYSCHEDULER_KEY_PREFIX": "billing"})
    assert config.max_concurrent == 4
    assert config.lock_ttl == 120.0
    assert config.key_prefix == "billing"


def test_from_mapping_ignores_unrelated_keys_of_a_whole_flask_config():
    # Given a Flask-like app.config with many settings of other extensions
    flask_config = {
        "DEBUG": False,
        "TESTING": False,
        "SECRET_KEY": "dev",
        "PERMANENT_SESSION_LIFETIME": timedelta(days=31),
        "SESSION_COOKIE_NAME": "session",
        "SQLALCHEMY_DATABASE_URI": "sqlite://",
        "APPLICATION_ROOT": "/",
        "MAX_CONTENT_LENGTH": None,
        "JSON_SORT_KEYS": True,
        "max_concurrency": 99,  # not a field name either
        "PYSCHEDULER_MAX_CONCURRENT": 2,
    }

    # When it is read
    config = SchedulerConfig.from_mapping(flask_config)

    # Then only the PYSCHEDULER_ setting counts
    assert config == SchedulerConfig(max_concurrent=2)


def test_from_mapping_of_nothing_is_the_default():
    assert SchedulerConfig.from_mapping({}) == SchedulerConfig()


def test_from_mapping_rejects_an_unknown_prefixed_key_naming_it():
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_mapping({"PYSCHEDULER_MAX_CONCURENT": 4})
    assert info.value.field == "PYSCHEDULER_MAX_CONCURENT"
    assert "PYSCHEDULER_MAX_CONCURENT" in str(info.value)


def test_from_mapping_validates_the_values_it_reads():
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_mapping({"PYSCHEDULER_LOCK_TTL": 5,
                                      "PYSCHEDULER_LOCK_REFRESH_INTERVAL": 10})
    assert info.value.field == "lock_refresh_interval"


# --- from_env ------------------------------------------------------------------------------


def test_from_env_parses_every_field(clean_environ):
    config = SchedulerConfig.from_env(ALL_ENV)
    assert config == SchedulerConfig(
        tick_interval=0.5, max_concurrent=4, lock_ttl=60, lock_refresh_interval=20.5,
        backend_type="redis", redis_addr="cache:6380", redis_password="s3cret", redis_db=2,
        redis_url="redis://cache:6380/2", key_prefix="app", timezone="Europe/Berlin",
        misfire_grace_time=2.5, instance_id="web-1", history_limit=7)
    assert type(config.max_concurrent) is int and type(config.redis_db) is int
    assert type(config.lock_ttl) is float


@pytest.mark.parametrize("raw", ["none", "None", ""])
def test_from_env_reads_none_for_optional_fields(raw):
    config = SchedulerConfig.from_env({"PYSCHEDULER_REDIS_URL": raw,
                                       "PYSCHEDULER_MISFIRE_GRACE_TIME": raw,
                                       "PYSCHEDULER_INSTANCE_ID": raw})
    assert config.redis_url is None
    assert config.misfire_grace_time is None
    assert config.instance_id is None


@pytest.mark.parametrize("variable, raw, field", [
    ("PYSCHEDULER_MAX_CONCURRENT", "four", "max_concurrent"),
    ("PYSCHEDULER_MAX_CONCURRENT", "4.0", "max_concurrent"),
    ("PYSCHEDULER_REDIS_DB", "", "redis_db"),
    ("PYSCHEDULER_TICK_INTERVAL", "5s", "tick_interval"),
    ("PYSCHEDULER_LOCK_TTL", "thirty", "lock_ttl"),
    ("PYSCHEDULER_LOCK_REFRESH_INTERVAL", "", "lock_refresh_interval"),
    ("PYSCHEDULER_MISFIRE_GRACE_TIME", "later", "misfire_grace_time"),
    ("PYSCHEDULER_HISTORY_LIMIT", "many", "history_limit"),
])
def test_from_env_non_numeric_value_names_the_variable(variable, raw, field):
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_env({variable: raw})
    assert info.value.field == field
    assert variable in str(info.value)
    assert repr(raw) in str(info.value)


def test_from_env_validates_parsed_values():
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_env({"PYSCHEDULER_REDIS_DB": "-1"})
    assert info.value.field == "redis_db"
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_env({"PYSCHEDULER_TICK_INTERVAL": "nan"})
    assert info.value.field == "tick_interval"


def test_from_env_ignores_other_variables():
    config = SchedulerConfig.from_env({"PATH": "/usr/bin", "pyscheduler_max_concurrent": "3",
                                       "PYSCHEDULER_UNKNOWN": "1", "MAX_CONCURRENT": "3"})
    assert config == SchedulerConfig()


def test_from_env_reads_os_environ_by_default(clean_environ):
    # Given the process environment sets two variables
    clean_environ.setenv("PYSCHEDULER_MAX_CONCURRENT", "3")
    clean_environ.setenv("PYSCHEDULER_KEY_PREFIX", "from-env")

    # When no mapping is passed
    config = SchedulerConfig.from_env()

    # Then they are read
    assert config.max_concurrent == 3
    assert config.key_prefix == "from-env"


def test_from_env_with_an_explicit_mapping_does_not_read_os_environ(clean_environ):
    clean_environ.setenv("PYSCHEDULER_MAX_CONCURRENT", "3")
    assert SchedulerConfig.from_env({}).max_concurrent == 10


def test_from_mapping_reads_a_pyscheduler_dict_in_either_case():
    # Given Django-style settings: one PYSCHEDULER dict, keys upper- or lower-case
    settings = {"DEBUG": True, "PYSCHEDULER": {"BACKEND_TYPE": "redis", "lock_ttl": 60,
                                               "MAX_CONCURRENT": 3}}

    config = SchedulerConfig.from_mapping(settings)

    assert (config.backend_type, config.lock_ttl, config.max_concurrent) == ("redis", 60.0, 3)


def test_from_mapping_names_an_unknown_key_of_the_pyscheduler_dict():
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_mapping({"PYSCHEDULER": {"LOCK_TIME": 5}})
    assert info.value.field == "PYSCHEDULER['LOCK_TIME']"
    assert "LOCK_TTL" in str(info.value)


def test_from_mapping_refuses_a_pyscheduler_setting_that_is_not_a_dict():
    with pytest.raises(ConfigError, match="must be a dict of settings"):
        SchedulerConfig.from_mapping({"PYSCHEDULER": "redis://localhost"})


def test_from_mapping_leaves_the_callers_own_settings_alone():
    # Given settings the framework layer reads itself (AUTOSTART, STOP_TIMEOUT)
    settings = {"PYSCHEDULER_AUTOSTART": False, "PYSCHEDULER": {"STOP_TIMEOUT": 5}}

    # Then they are neither fields nor an error when named in ``ignore``
    assert SchedulerConfig.from_mapping(settings, ignore=("autostart", "stop_timeout")) == \
        SchedulerConfig()
    with pytest.raises(ConfigError, match="PYSCHEDULER_AUTOSTART"):
        SchedulerConfig.from_mapping(settings)


class SettingsObject:
    """Settings as attributes, as ``django.conf.settings`` has them."""

    DEBUG = False
    PYSCHEDULER = {"KEY_PREFIX": "shop", "TICK_INTERVAL": 1}


def test_from_mapping_reads_a_settings_object():
    config = SchedulerConfig.from_mapping(SettingsObject())
    assert (config.key_prefix, config.tick_interval) == ("shop", 1.0)


def test_from_mapping_reads_the_wrapped_settings_of_a_lazy_settings_dict():
    # ``django.conf.settings.__dict__`` holds the real settings under ``_wrapped``
    config = SchedulerConfig.from_mapping({"_wrapped": SettingsObject()})
    assert config.key_prefix == "shop"


def test_from_mapping_says_what_it_needs_when_given_something_else():
    with pytest.raises(ConfigError, match="expected a mapping .* or a settings object"):
        SchedulerConfig.from_mapping(42)


def test_a_config_error_keeps_its_message_apart_from_the_field():
    with pytest.raises(ConfigError) as info:
        SchedulerConfig(max_concurrent=0)
    assert info.value.field == "max_concurrent"
    assert info.value.message == "must be at least 1, got 0"
    assert str(info.value) == "max_concurrent: must be at least 1, got 0"
