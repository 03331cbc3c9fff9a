"""pyscheduler.contrib.django: the README's project, run with real ``manage.py`` processes.

Django's settings are process-global, so each behaviour runs in its own ``manage.py`` (or
Python) process against a copy of the project; the history of runs is the heartbeat job's
rows in the project's SQLite database. These tests use the in-memory backend (one process
at a time); the multi-process ones, on Redis, are in test_django_gunicorn.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")

from tests.readme_samples import README

from .django_project import (
    build_project,
    copy_project,
    readme_command,
)

HEARTBEAT = 0.2  # seconds between heartbeats in these tests
MEMORY = 'PYSCHEDULER["BACKEND_TYPE"] = "memory"'


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("django"))


@pytest.fixture
def project(built_project, tmp_path):
    project = copy_project(built_project, tmp_path, {"HEARTBEAT_SECONDS": str(HEARTBEAT)})
    yield project
    project.close()


def consecutive(rows, every=HEARTBEAT):
    """Whether the runs are one per occurrence, with no occurrence missing between them."""
    times = [ms for ms, _, _ in rows]
    return all(later - earlier == round(every * 1000) for earlier, later in zip(times, times[1:]))


# --- settings, read by read_settings() from plain objects -----------------------------------
# In a subprocess: importing pyscheduler.contrib.django creates Django's lazy settings object,
# and in this process any isinstance() on it (a test scanning gc.get_objects()) would raise.

READ = """
import json, sys
from types import SimpleNamespace
from pyscheduler import ConfigError
from pyscheduler.contrib.django.conf import read_settings, wants_autostart
value = json.loads(sys.argv[1])
settings = SimpleNamespace() if value is None else SimpleNamespace(PYSCHEDULER=value)
try:
    read = read_settings(settings)
except ConfigError as exc:
    print(json.dumps({"field": exc.field, "error": str(exc),
                      "wants_autostart": wants_autostart(settings)}))
else:
    print(json.dumps({"autostart": read.autostart, "stop_timeout": read.stop_timeout,
                      "backend_type": read.config.backend_type, "lock_ttl": read.config.lock_ttl,
                      "wants_autostart": wants_autostart(settings)}))
"""


def read(value):
    """What read_settings() makes of ``PYSCHEDULER = value`` (``None``: no such setting)."""
    result = subprocess.run([sys.executable, "-c", READ, json.dumps(value)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_settings_default_to_no_autostart_and_a_25_s_stop_timeout():
    assert read(None) == {"autostart": False, "stop_timeout": 25.0, "backend_type": "memory",
                          "lock_ttl": 30.0, "wants_autostart": False}


def test_settings_read_fields_and_own_keys_in_either_case():
    assert read({"BACKEND_TYPE": "redis", "lock_ttl": 60, "AUTOSTART": True,
                 "stop_timeout": 5}) == {"autostart": True, "stop_timeout": 5.0,
                                         "backend_type": "redis", "lock_ttl": 60.0,
                                         "wants_autostart": True}


@pytest.mark.parametrize("value, setting, message", [
    ({"LOCK_TTL": -1}, "PYSCHEDULER['LOCK_TTL']", "must be positive"),
    ({"lock_ttl": 5, "lock_refresh_interval": 10}, "PYSCHEDULER['lock_refresh_interval']",
     "must be shorter than lock_ttl"),
    ({"LOCK_TLL": 60}, "PYSCHEDULER['LOCK_TLL']", "unknown setting"),
    ({"AUTOSTART": "yes"}, "PYSCHEDULER['AUTOSTART']", "must be True or False"),
    ({"STOP_TIMEOUT": "soon"}, "PYSCHEDULER['STOP_TIMEOUT']", "seconds"),
    ({"STOP_TIMEOUT": -1}, "PYSCHEDULER['STOP_TIMEOUT']", "must not be negative"),
    (["redis"], "PYSCHEDULER", "must be a dict"),
])
def test_a_bad_setting_is_named_as_written_in_settings_py(value, setting, message):
    error = read(value)
    assert error["field"] == setting
    assert error["error"].startswith(f"{setting}: ") and message in error["error"]


@pytest.mark.parametrize("value, wanted", [
    ({"autostart": True, "LOCK_TTL": -1}, True),  # a web worker must know even then
    ({"AUTOSTART": "yes"}, False),
    (["AUTOSTART"], False),
])
def test_wants_autostart_only_for_true(value, wanted):
    assert read(value)["wants_autostart"] is wanted


def test_importing_the_app_reads_no_settings_and_builds_nothing():
    # Given no Django settings at all: declaring a job must still work
    code = ("from pyscheduler.contrib.django import scheduler\n"
            "@scheduler.every(60, name='tick')\n"
            "def tick(): pass\n"
            "print(scheduler.built, 'django.conf' in __import__('sys').modules)\n"
            "from django.conf import settings\n"
            "print(settings.configured)\n")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "False"]


# --- manage.py check ------------------------------------------------------------------------

def test_check_passes_with_the_readme_settings(project):
    result = project.run(readme_command("check"))
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_names_a_bad_setting(project):
    # Given a lease shorter than its refresh interval, written in lower case
    project.configure('PYSCHEDULER["lock_ttl"] = 5\nPYSCHEDULER["LOCK_REFRESH_INTERVAL"] = 10')
    # When the project is checked
    result = project.manage("check")
    # Then the check fails, naming the setting as written
    assert result.returncode == 1
    assert ("(pyscheduler.E002) PYSCHEDULER['LOCK_REFRESH_INTERVAL']: must be shorter than "
            "lock_ttl (5.0 s), got 10.0 s") in result.stderr


def test_check_names_an_unknown_key(project):
    project.configure('PYSCHEDULER["MAX_CONCURENT"] = 4')
    result = project.manage("check")
    assert result.returncode == 1
    assert "(pyscheduler.E002) PYSCHEDULER['MAX_CONCURENT']: unknown setting" in result.stderr
    assert "MAX_CONCURRENT" in result.stderr  # the known keys are listed


def test_check_errors_when_pyscheduler_is_not_a_dict(project):
    project.configure('PYSCHEDULER = "redis://localhost:6379/0"')
    result = project.manage("check")
    assert result.returncode == 1
    assert "(pyscheduler.E001) PYSCHEDULER: must be a dict" in result.stderr


def test_runscheduler_refuses_a_bad_setting(project):
    project.configure('PYSCHEDULER["TICK_INTERVAL"] = 0')
    result = project.run(readme_command("runscheduler"))
    assert result.returncode == 1
    assert "PYSCHEDULER['TICK_INTERVAL']: must be positive" in result.stderr
    assert project.heartbeats() == []


def test_check_reports_a_job_that_cannot_be_registered(project):
    # Given a jobs.py with a second job under a name already taken
    jobs = project.path / "myapp" / "jobs.py"
    jobs.write_text(jobs.read_text(encoding="utf-8") + (
        "\n\n@scheduler.cron('*/5 * * * *', name='heartbeat')\n"
        "def another_heartbeat() -> None:\n"
        "    pass\n"), encoding="utf-8")
    result = project.manage("check")
    assert result.returncode == 1
    assert "(pyscheduler.E003) a job declared in a jobs.py cannot be registered" in result.stderr
    assert "heartbeat" in result.stderr


def test_check_warns_about_autostart_with_the_memory_backend(project):
    # Given the README's settings with the in-memory backend (AUTOSTART stays on)
    project.configure(MEMORY)
    result = project.manage("check")
    # Then check warns (a warning does not fail it), naming the fix, as the README shows
    assert result.returncode == 0, result.stderr
    shown = next(line.strip() for line in README.read_text(encoding="utf-8").splitlines()
                 if "(pyscheduler.W001)" in line)
    assert shown in result.stderr
    assert "HINT: Share a Redis backend" in result.stderr


def test_no_warning_for_the_memory_backend_without_autostart(project):
    project.configure(MEMORY + '\nPYSCHEDULER["AUTOSTART"] = False')
    result = project.manage("check")
    assert result.returncode == 0 and "pyscheduler.W001" not in result.stdout + result.stderr


# --- AUTOSTART: where the scheduler starts --------------------------------------------------

@pytest.mark.parametrize("command", [
    ["migrate"],
    ["check"],
    ["showmigrations"],
    ["shell", "-c", "import time; time.sleep(2)"],
])
def test_management_commands_never_start_the_scheduler(project, command):
    # Given AUTOSTART on, and a heartbeat every 0.2 s
    project.configure(MEMORY + '\nSILENCED_SYSTEM_CHECKS = ["pyscheduler.W001"]')
    # When a management command runs (the shell for 2 s: 10 heartbeats if it started)
    result = project.manage(*command)
    # Then no scheduler started and no job ran
    assert result.returncode == 0, result.stderr
    assert "scheduler started" not in result.stderr
    assert project.heartbeats() == []


def test_a_process_loading_the_wsgi_application_starts_it(project):
    # The counterpart of the test above: the same settings where the project is served.
    project.configure(MEMORY)
    code = "import time, project.wsgi; time.sleep(1.5)"
    result = project.run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert "AUTOSTART: starting the scheduler" in result.stderr
    assert "scheduler started" in result.stderr
    rows = project.heartbeats()
    assert len(rows) >= 2 and consecutive(rows)
    assert "scheduler stopped" in result.stderr  # stopped gracefully at interpreter exit


def test_a_script_calling_django_setup_does_not_start_it(project):
    project.configure(MEMORY)
    code = ("import os, time, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'project.settings';"
            " django.setup(); time.sleep(1.5)")
    result = project.run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert "scheduler started" not in result.stderr
    assert project.heartbeats() == []


def test_runserver_without_the_reloader_runs_jobs_in_its_own_process(project):
    from tests.redis_server import free_port

    project.configure(MEMORY + '\nSILENCED_SYSTEM_CHECKS = ["pyscheduler.W001"]')
    port = free_port()
    server = project.spawn([*readme_command("runserver"), "--noreload", f"127.0.0.1:{port}"])
    rows = project.wait_for_heartbeats(3)
    assert {pid for _, _, pid in rows} == {server.pid}
    assert "heartbeats" in project.wait_for(lambda: project.get(port), "the page")


# --- runscheduler ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_runscheduler_runs_the_jobs_and_stops_gracefully(project, sig):
    # Given AUTOSTART off: only runscheduler runs jobs
    project.configure(MEMORY + '\nPYSCHEDULER["AUTOSTART"] = False')
    process = project.spawn(readme_command("runscheduler"))
    # When it has run a few heartbeats and gets the signal
    project.wait_for_heartbeats(4)
    status = project.stop(process, sig)
    # Then it stopped gracefully with status 0, after runs of its own, one per occurrence
    output = project.output(process)
    assert status == 0, output
    assert "scheduler started" in output
    assert f"runscheduler: got {sig.name}" in output
    assert "scheduler stopped" in output and "runscheduler: stopped gracefully" in output
    rows = project.heartbeats()
    assert {pid for _, _, pid in rows} == {process.pid}
    assert consecutive(rows)
    fences = [fence for _, fence, _ in rows]
    assert fences == sorted(set(fences))


def test_runscheduler_logs_to_the_console_without_logging_settings(project):
    # Given a project whose LOGGING says nothing about pyscheduler
    project.configure(MEMORY + '\nPYSCHEDULER["AUTOSTART"] = False\n'
                      'LOGGING = {"version": 1, "disable_existing_loggers": False}')
    quiet = project.spawn([*readme_command("runscheduler"), "-v", "0"])
    chatty = project.spawn([*readme_command("runscheduler"), "-v", "2"])
    project.wait_for_heartbeats(4)
    for process in (quiet, chatty):
        assert project.stop(process) == 0, project.output(process)
    # Then -v 2 logs the runs to the console, with levels and times; -v 0 logs no info line
    assert "INFO pyscheduler: scheduler started" in project.output(chatty)
    assert "INFO pyscheduler: job started job=heartbeat" in project.output(chatty)
    assert "INFO" not in project.output(quiet)


def test_runscheduler_stop_timeout_hands_a_long_run_back(project):
    # Given a job that runs for 30 s, and --stop-timeout 0.5
    project.configure(MEMORY + '\nPYSCHEDULER["AUTOSTART"] = False')
    jobs = project.path / "myapp" / "jobs.py"
    jobs.write_text(jobs.read_text(encoding="utf-8") + (
        "\n\n@scheduler.every(0.2, name='long')\n"
        "def long_job(ctx: JobContext) -> None:\n"
        "    Heartbeat.objects.create(scheduled_at=ctx.scheduled_at, fence=-1, pid=0)\n"
        "    ctx.sleep(30)\n"), encoding="utf-8")
    process = project.spawn([*readme_command("runscheduler"), "--stop-timeout", "0.5"])
    project.wait_for(lambda: [row for row in project.heartbeats() if row[1] == -1],
                     "the long job to start")
    # When it is stopped
    assert project.stop(process) == 0, project.output(process)
    # Then it waited 0.5 s, not 30, and says which run it handed back
    output = project.output(process)
    assert "waiting up to 0.5 s" in output
    assert "still running at the deadline, handed back to the group: long" in output


def test_a_handler_gets_a_new_connection_when_the_database_is_replaced(project, built_project,
                                                                      tmp_path):
    # Given runscheduler running the heartbeat (each run opens a connection in a pool thread)
    project.configure(MEMORY + '\nPYSCHEDULER["AUTOSTART"] = False')
    process = project.spawn(readme_command("runscheduler"))
    project.wait_for_heartbeats(3)
    # When the database file is replaced under it (as a restored backup would be): a
    # connection kept open would go on writing to the old, unlinked file
    fresh = tmp_path / "fresh.sqlite3"
    shutil.copy(built_project / "db.sqlite3", fresh)
    os.replace(fresh, project.database)
    # Then the next runs write to the new file: every handler got a fresh connection
    rows = project.wait_for_heartbeats(5)
    assert consecutive(rows)
    assert project.stop(process) == 0, project.output(process)
    assert "job failed" not in project.output(process)


def test_an_unknown_job_option_is_refused_at_the_decorator_line():
    # No settings are needed: the option is checked before anything is built
    from pyscheduler import InvalidJobError
    from pyscheduler.contrib.django import scheduler

    with pytest.raises(InvalidJobError, match=r"unknown job option\(s\) \['retries'\]"):
        scheduler.every(60, name="typo", retries=3)
