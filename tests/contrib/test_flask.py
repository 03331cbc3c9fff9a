"""The Flask extension with real Flask applications: settings, decorators, application
contexts, several applications in one process, where it starts, and the CLI.

Schedules are driven by a FakeClock (``PYSCHEDULER_AUTOSTART = False`` and
``start(background=False)``); the only real processes are ``flask pyscheduler run`` under
SIGTERM and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import click
import click.testing
import pytest
from flask import Flask, current_app
from flask.cli import FlaskGroup, ScriptInfo, run_command

from pyscheduler import (
    ConfigError,
    FakeClock,
    IntervalSchedule,
    InvalidJobError,
    InvalidScheduleError,
    Job,
    JobContext,
    JobStatus,
    Scheduler,
    SchedulerConfig,
    SchedulerStateError,
)
from pyscheduler.contrib.flask import EXTENSION_KEY, FlaskScheduler
from tests.helpers import START, Schedulers, step
from tests.readme_samples import console_commands, write_sample_files

BOUND = 60.0  # generous upper bound, in seconds, for a subprocess event


def make_app(name: str = "app", **config: object) -> Flask:
    app = Flask(name)
    app.config.update(PYSCHEDULER_AUTOSTART=False, PYSCHEDULER_TICK_INTERVAL=5,
                      PYSCHEDULER_MAX_CONCURRENT=4)
    app.config.update(config)
    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def start(ext: FlaskScheduler, app: Flask, schedulers: Schedulers) -> Scheduler:
    """Start ``app``'s scheduler for the test to step, stopped at teardown."""
    return schedulers(ext.start(app, background=False))


# -- settings ---------------------------------------------------------------------------------

def test_every_setting_comes_from_app_config():
    # Given PYSCHEDULER_* keys in app.config, among other settings
    app = make_app(PYSCHEDULER_MAX_CONCURRENT=3, PYSCHEDULER_TICK_INTERVAL=0.5,
                   PYSCHEDULER_KEY_PREFIX="shop", PYSCHEDULER_TIMEZONE="Europe/Paris",
                   PYSCHEDULER_LOCK_TTL=timedelta(seconds=60),
                   PYSCHEDULER_STOP_TIMEOUT=7, SQLALCHEMY_DATABASE_URI="sqlite://")
    ext = FlaskScheduler(app)

    # Then the scheduler is built from them
    config = ext.scheduler.config
    assert (config.max_concurrent, config.tick_interval, config.key_prefix, config.lock_ttl) \
        == (3, 0.5, "shop", 60.0)
    state = app.extensions[EXTENSION_KEY]
    assert state.stop_timeout == 7.0 and state.autostart is False


def test_defaults_autostart_and_a_stop_timeout_below_gunicorns(schedulers):
    app = Flask("defaults")
    ext = FlaskScheduler(app)
    schedulers(ext.scheduler)
    state = app.extensions[EXTENSION_KEY]
    assert state.autostart is True and state.stop_timeout == 25.0
    assert ext.scheduler.config == SchedulerConfig.default()


@pytest.mark.parametrize("config, key", [
    ({"PYSCHEDULER_TICK_INTERVAL": -1}, "PYSCHEDULER_TICK_INTERVAL"),
    ({"PYSCHEDULER_BACKEND_TYPE": "mongo"}, "PYSCHEDULER_BACKEND_TYPE"),
    ({"PYSCHEDULER_TIMEZONE": "Mars/Olympus"}, "PYSCHEDULER_TIMEZONE"),
    ({"PYSCHEDULER_TICKINTERVAL": 1}, "PYSCHEDULER_TICKINTERVAL"),
    ({"PYSCHEDULER": {"max_concurrent": 0}}, "PYSCHEDULER['max_concurrent']"),
    ({"PYSCHEDULER_AUTOSTART": "maybe"}, "PYSCHEDULER_AUTOSTART"),
    ({"PYSCHEDULER_AUTOSTART": 2}, "PYSCHEDULER_AUTOSTART"),
    ({"PYSCHEDULER_STOP_TIMEOUT": -1}, "PYSCHEDULER_STOP_TIMEOUT"),
    ({"PYSCHEDULER_STOP_TIMEOUT": "soon"}, "PYSCHEDULER_STOP_TIMEOUT"),
])
def test_a_bad_setting_is_a_config_error_naming_the_key(config, key):
    app = make_app(**config)
    ext = FlaskScheduler()
    with pytest.raises(ConfigError) as info:
        ext.init_app(app)
    assert info.value.field == key
    assert str(info.value).startswith(f"{key}: ")
    assert EXTENSION_KEY not in app.extensions


def test_string_flags_and_durations_as_environment_variables_give_them():
    app = make_app(PYSCHEDULER_AUTOSTART="false", PYSCHEDULER_STOP_TIMEOUT="3.5")
    FlaskScheduler(app)
    state = app.extensions[EXTENSION_KEY]
    assert state.autostart is False and state.stop_timeout == 3.5


def test_init_app_twice_is_refused():
    app = make_app()
    FlaskScheduler(app)
    with pytest.raises(SchedulerStateError, match="once per application"):
        FlaskScheduler().init_app(app)


# -- decorators -------------------------------------------------------------------------------

def test_jobs_decorated_before_and_after_init_app_both_run_in_an_app_context(clock, schedulers):
    # Given one job decorated before init_app and one after, both using current_app
    ext = FlaskScheduler(clock=clock)
    runs: list[tuple[str, str]] = []

    @ext.every(60, name="before")
    def before() -> None:
        runs.append(("before", current_app.name))

    app = make_app("shop")
    ext.init_app(app)

    @ext.every(60, name="after")
    def after(ctx: JobContext) -> None:
        runs.append((ctx.job_name, current_app.config["PYSCHEDULER_KEY_PREFIX"]))

    app.config["PYSCHEDULER_KEY_PREFIX"] = "seen-through-current-app"
    scheduler = start(ext, app, schedulers)

    # When their first occurrence comes
    clock.advance(60)
    step(scheduler)

    # Then both ran, each inside the application's context
    assert sorted(runs) == [("after", "seen-through-current-app"), ("before", "shop")]
    assert before.__name__ == "before"  # the decorator returns the function itself


def test_a_job_decorated_while_the_scheduler_runs_is_stored_at_once(clock, schedulers):
    app = make_app()
    ext = FlaskScheduler(app, clock=clock)
    scheduler = start(ext, app, schedulers)
    runs = []

    @ext.every(10, name="late")
    def late() -> None:
        runs.append(current_app.name)

    clock.advance(10)
    step(scheduler)
    assert runs == ["app"]


def test_the_default_name_is_module_and_qualname(clock):
    ext = FlaskScheduler(make_app(), clock=clock)

    @ext.once(START + timedelta(hours=1))
    def cleanup() -> None:
        pass

    (job,) = ext.scheduler.jobs()
    assert job.name == f"{__name__}.test_the_default_name_is_module_and_qualname.<locals>.cleanup"


def test_cron_jobs_take_the_app_timezone_unless_given_one(clock):
    ext = FlaskScheduler(clock=clock)

    @ext.cron("0 9 * * *", name="local")
    def local() -> None:
        pass

    @ext.cron("0 9 * * *", name="tokyo", tz="Asia/Tokyo")
    def tokyo() -> None:
        pass

    paris, utc = make_app("paris", PYSCHEDULER_TIMEZONE="Europe/Paris"), make_app("utc")
    ext.init_app(paris)
    ext.init_app(utc)
    zones = {app.name: {job.name: job.schedule.describe()["tz"]
                        for job in ext.scheduler_for(app).jobs()} for app in (paris, utc)}
    assert zones == {"paris": {"local": "Europe/Paris", "tokyo": "Asia/Tokyo"},
                     "utc": {"local": "UTC", "tokyo": "Asia/Tokyo"}}


@pytest.mark.parametrize("decorate, error", [
    (lambda ext: ext.every(60, name="x", retries=3), InvalidJobError),
    (lambda ext: ext.cron("* * * * *", name="x", priority=1), InvalidJobError),
    (lambda ext: ext.once(START, name="x", timout=5), InvalidJobError),
    (lambda ext: ext.every(60, name="x", timeout=-1)(lambda: None), InvalidJobError),
    (lambda ext: ext.every(60, name="bad\nname")(lambda: None), InvalidJobError),
    (lambda ext: ext.every(60, name="x")(lambda a, b: None), InvalidJobError),
    (lambda ext: ext.cron("61 * * * *", name="x"), InvalidScheduleError),
    (lambda ext: ext.cron("* * * * *", name="x", tz="Nowhere/Land"), InvalidScheduleError),
    (lambda ext: ext.every(-5, name="x"), InvalidScheduleError),
])
def test_bad_decorations_fail_at_decoration_time_even_without_an_app(decorate, error):
    ext = FlaskScheduler()
    with pytest.raises(error):
        decorate(ext)
    # and nothing was recorded for the applications to come
    app = make_app()
    ext.init_app(app)
    assert ext.scheduler.jobs() == []


# -- several applications ---------------------------------------------------------------------

def test_two_apps_in_one_process_each_run_their_own_scheduler(clock, schedulers):
    # Given one extension on two applications with different settings
    ext = FlaskScheduler(clock=clock)
    runs: list[str] = []

    @ext.every(30, name="tick")
    def tick() -> None:
        runs.append(current_app.name)

    first = make_app("first", PYSCHEDULER_KEY_PREFIX="one")
    second = make_app("second", PYSCHEDULER_KEY_PREFIX="two", PYSCHEDULER_MAX_CONCURRENT=2)
    ext.init_app(first)
    ext.init_app(second)

    # Then each has its own scheduler, built from its own settings
    one, two = ext.scheduler_for(first), ext.scheduler_for(second)
    assert one is not two and one.backend is not two.backend
    assert (one.config.key_prefix, two.config.key_prefix) == ("one", "two")
    assert two.config.max_concurrent == 2

    # When both run an occurrence
    start(ext, first, schedulers)
    start(ext, second, schedulers)
    clock.advance(30)
    step(one)
    step(two)

    # Then the job ran once in each, each time in its own application's context
    assert sorted(runs) == ["first", "second"]


def test_scheduler_resolution(clock):
    # No application yet
    ext = FlaskScheduler(clock=clock)
    with pytest.raises(SchedulerStateError, match="init_app"):
        ext.scheduler  # noqa: B018
    # One: that one
    first = make_app("first")
    ext.init_app(first)
    assert ext.scheduler is ext.scheduler_for(first)
    # Two: only inside an application context
    second = make_app("second")
    ext.init_app(second)
    with pytest.raises(SchedulerStateError, match="2 applications"):
        ext.scheduler  # noqa: B018
    with second.app_context():
        assert ext.scheduler is ext.scheduler_for(second)
    with first.test_request_context():
        assert ext.scheduler is ext.scheduler_for(first)
    # An application of another extension is not this one's
    foreign = make_app("foreign")
    with foreign.app_context(), pytest.raises(SchedulerStateError, match="foreign"):
        ext.scheduler  # noqa: B018
    with pytest.raises(SchedulerStateError, match="foreign"):
        ext.scheduler_for(foreign)
    # The constructor's application always wins
    bound = FlaskScheduler(make_app("bound"), clock=clock)
    with second.app_context():
        assert bound.scheduler is bound.scheduler_for(bound.app)


# -- handlers ---------------------------------------------------------------------------------

def test_a_failing_handler_is_recorded_as_a_failure(clock, schedulers):
    app = make_app()
    ext = FlaskScheduler(app, clock=clock)
    contexts = []

    @ext.every(60, name="broken")
    def broken(ctx: JobContext) -> None:
        contexts.append(current_app._get_current_object())
        raise RuntimeError("database is down")

    scheduler = start(ext, app, schedulers)
    clock.advance(60)
    step(scheduler)
    assert contexts == [app]
    meta = scheduler.get_job("broken").metadata
    assert meta.run_count == 1 and "database is down" in meta.last_error


# -- where it starts --------------------------------------------------------------------------

def test_a_plain_process_starts_at_init_app(schedulers):
    app = make_app(PYSCHEDULER_AUTOSTART=True)
    ext = FlaskScheduler(app)
    schedulers(ext.scheduler)
    with pytest.raises(SchedulerStateError, match="running"):
        ext.scheduler.start()


def test_autostart_false_starts_nothing_until_start(schedulers):
    app = make_app(PYSCHEDULER_AUTOSTART=False)
    ext = FlaskScheduler(app)
    scheduler = schedulers(ext.start())  # would raise if init_app had started it
    assert scheduler is ext.scheduler


@pytest.fixture
def flask_command_env(monkeypatch):
    # FlaskGroup marks the environment (FLASK_RUN_FROM_CLI): setenv first, so that the
    # variables are restored (here: removed) after the test even if they were not set before.
    for name in ("FLASK_RUN_FROM_CLI", "WERKZEUG_RUN_MAIN", "FLASK_DEBUG"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("args", [["routes"], ["pyscheduler", "jobs"]])
def test_flask_commands_other_than_run_start_nothing(flask_command_env, args, schedulers):
    # Given a real flask command line whose application autostarts
    apps: list[Flask] = []
    ext = FlaskScheduler()

    def create_app() -> Flask:
        app = make_app(PYSCHEDULER_AUTOSTART=True)
        ext.init_app(app)
        schedulers(ext.scheduler_for(app))
        apps.append(app)
        return app

    # When a command that serves nothing loads it
    result = click.testing.CliRunner().invoke(FlaskGroup(create_app=create_app), args)
    assert result.exit_code == 0, result.output

    # Then its scheduler was not started (starting it now works)
    (app,) = apps
    ext.start(app)


def run_context(reload: object) -> click.Context:
    """The context flask run loads the application in (as flask/cli.py run_command does)."""
    ctx = click.Context(run_command, info_name="run", obj=ScriptInfo())
    ctx.params["reload"] = reload
    return ctx


@pytest.mark.parametrize("reload, debug, child, starts", [
    (False, None, False, True),      # flask run
    (None, None, False, True),       # flask run, reloader off by default
    (True, None, False, False),      # flask run --reload: the watcher
    (None, "1", False, False),       # flask run --debug: the watcher
    (True, None, True, True),        # ... and its serving child
    (None, "1", True, True),
])
def test_flask_run_starts_only_in_the_serving_process(flask_command_env, reload, debug,
                                                      child, starts, schedulers):
    if debug:
        flask_command_env.setenv("FLASK_DEBUG", debug)
    if child:
        flask_command_env.setenv("WERKZEUG_RUN_MAIN", "true")
    app = make_app(PYSCHEDULER_AUTOSTART=True)
    ext = FlaskScheduler()
    with run_context(reload):
        ext.init_app(app)
    schedulers(ext.scheduler_for(app))
    if starts:
        with pytest.raises(SchedulerStateError, match="running"):
            ext.scheduler.start()
    else:
        ext.start(app)


# -- the CLI ----------------------------------------------------------------------------------

def test_cli_jobs_lists_the_stored_state(clock, schedulers):
    # Given two jobs, one of which failed on its first run
    app = make_app("shop")
    ext = FlaskScheduler(app, clock=clock)

    @ext.every(60, name="sync")
    def sync() -> None:
        pass

    @ext.every(60, name="broken")
    def broken() -> None:
        raise ValueError("no such table: orders")

    scheduler = start(ext, app, schedulers)
    clock.advance(60)
    step(scheduler)

    # When listing them
    result = app.test_cli_runner().invoke(args=["pyscheduler", "jobs"])

    # Then every job shows with its status, next and last run, run count and last error
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split() == ["NAME", "STATUS", "NEXT", "RUN", "LAST", "RUN", "RUNS", "LAST",
                              "ERROR"]
    rows = {line.split()[0]: line for line in lines}
    assert sorted(rows) == ["broken", "sync"]
    assert rows["sync"].split()[1] == JobStatus.SCHEDULED.value
    assert "2030-01-01 00:02:00 UTC" in rows["sync"]  # next run
    assert "2030-01-01 00:01:00 UTC" in rows["sync"]  # last run
    assert "no such table: orders" in rows["broken"]
    assert rows["broken"].split()[8] == "1"  # the run count, after two dates of 3 words


def test_cli_jobs_reads_the_backend_without_starting_the_scheduler(clock, schedulers):
    # Given an application whose scheduler was never started, and a job stored by another
    # scheduler of the group (the same in-memory backend)
    first = make_app("first")
    ext = FlaskScheduler(first, clock=clock)

    @ext.every(60, name="sync")
    def sync() -> None:
        pass

    result = first.test_cli_runner().invoke(args=["pyscheduler", "jobs"])
    assert result.exit_code == 0, result.output
    assert "not stored yet" in result.output

    # a peer sharing the store, as with Redis
    peer = schedulers(Scheduler(ext.scheduler.backend, clock=clock))
    peer.register(Job("sync", IntervalSchedule(60), sync))
    peer.start(background=False)
    peer.stop()

    # When listing the first application's jobs
    result = first.test_cli_runner().invoke(args=["pyscheduler", "jobs"])

    # Then they show the stored state, and listing started nothing
    assert result.exit_code == 0, result.output
    assert "scheduled" in result.output and "2030-01-01 00:01:00 UTC" in result.output
    schedulers(ext.start(background=False))  # would raise had the listing started it


def test_cli_jobs_with_no_jobs():
    app = make_app("empty")
    FlaskScheduler(app)
    result = app.test_cli_runner().invoke(args=["pyscheduler", "jobs"])
    assert result.exit_code == 0 and "no jobs registered" in result.output


def test_flask_pyscheduler_run_runs_jobs_until_sigterm_then_exits_0(tmp_path):
    # Given the README's Flask application, on the in-memory backend, a job every 0.2 s
    write_sample_files(tmp_path, prefix="flaskapp/")
    history = tmp_path / "heartbeat.jsonl"
    command = next(c for c in console_commands() if c.endswith("pyscheduler run"))
    env = dict(os.environ, FLASK_PYSCHEDULER_BACKEND_TYPE="memory", HEARTBEAT_EVERY="0.2",
               HEARTBEAT_LOG=str(history))
    flask = str(Path(sys.executable).parent / "flask")
    process = subprocess.Popen([flask, *command.split()[1:]], cwd=tmp_path / "flaskapp",
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        # When it has run a few occurrences, then gets SIGTERM
        lines = wait_for_lines(history, 3, process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=BOUND)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    # Then it ran them in its own process, in the app's context, and stopped cleanly
    assert process.returncode == 0, err
    assert {line["pid"] for line in lines} == {process.pid}
    assert {line["app"] for line in lines} == {"app"}
    assert "running 2 job(s)" in err and "pyscheduler: stopped" in err
    assert "scheduler started" in err  # logging goes to the console


def wait_for_lines(path: Path, count: int, process: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + BOUND
    while True:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines()
                     if line.endswith("}")]
            if len(lines) >= count:
                return lines
        if process.poll() is not None:
            raise AssertionError(f"the process exited: {process.communicate()}")
        assert time.monotonic() < deadline, f"fewer than {count} lines in {path}"
        time.sleep(0.02)


@pytest.mark.parametrize("command", ["jobs", "run"])
def test_cli_commands_name_an_unreachable_backend_and_exit_1(command):
    # Given an application whose Redis does not answer
    from tests.redis_server import free_port

    port = free_port()
    app = make_app(PYSCHEDULER_BACKEND_TYPE="redis",
                   PYSCHEDULER_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    ext = FlaskScheduler(app)
    ext.every(60, name="sync")(lambda: None)

    # When a command needs it
    result = app.test_cli_runner().invoke(args=["pyscheduler", command])

    # Then it fails with an error that names the address, not a traceback
    assert result.exit_code == 1, result.output
    assert f"127.0.0.1:{port}" in result.output and "Traceback" not in result.output
