"""The README's Django project served for real, on a real redis-server: gunicorn (with and
without ``--preload``), ``manage.py runscheduler`` processes, ``runserver`` with its
autoreloader, and uWSGI.

The history of runs is the heartbeat job's rows (scheduled time, fence, pid), written by the
handler through the ORM. Every test checks that each occurrence between the first and the
last run ran exactly once, only in the processes that should run jobs, and that a graceful
stop leaves no lease behind in Redis. Waits poll the database with generous upper bounds;
nothing sleeps through a schedule.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import pytest

pytest.importorskip("django")

from tests.redis_server import free_port

from .django_project import BIN, build_project, copy_project, readme_command

pytestmark = [pytest.mark.slow, pytest.mark.redis]

EVERY = 0.5  # seconds between heartbeats
RUNS = 8  # heartbeats to wait for: a window of about 4 s
PREFIX = "myproject"  # the README's KEY_PREFIX


@pytest.fixture(scope="module")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("django"))


@pytest.fixture
def redis_server(redis_server_factory):
    return redis_server_factory()


@pytest.fixture
def project(built_project, tmp_path, redis_server):
    port = free_port()
    project = copy_project(built_project, tmp_path, {
        "REDIS_URL": redis_server.url,
        "HEARTBEAT_SECONDS": str(EVERY),
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --no-control-socket",
    })
    project.port = port
    yield project
    project.close()


def assert_each_occurrence_once(rows):
    """Every occurrence from the first run to the last ran once: no duplicate, no gap."""
    assert len(rows) >= RUNS
    times = [ms for ms, _, _ in rows]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert set(gaps) == {round(EVERY * 1000)}, f"duplicates (0) or missing runs: {gaps}"
    fences = [fence for _, fence, _ in rows]
    assert fences == sorted(set(fences))


def assert_no_lease_left(redis_server):
    client = redis_server.client()
    try:
        assert client.keys(f"{{{PREFIX}}}:lease:*") == []
        assert client.keys(f"{{{PREFIX}}}:job:*")  # the jobs were stored there
    finally:
        client.close()


def serve_a_window(project, command):
    """Run ``command`` until RUNS heartbeats, stop it with SIGTERM, and check that each
    occurrence ran once. :returns: the server process, the heartbeat rows, its output."""
    master = project.spawn(command)
    assert "heartbeats" in project.wait_for(lambda: project.get(project.port), "the page")
    project.wait_for_heartbeats(RUNS)
    assert project.stop(master) == 0, project.output(master)
    rows = project.heartbeats()
    assert_each_occurrence_once(rows)
    return master, rows, project.output(master)


def booted_workers(output):
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", output)}


@pytest.mark.parametrize("preload", [False, True], ids=["plain", "preload"])
def test_gunicorn_workers_run_each_occurrence_once(project, redis_server, preload):
    # Given the README's settings (Redis, AUTOSTART) served by gunicorn -w 4
    command = readme_command("gunicorn", "project.wsgi", "--preload") if preload else \
        readme_command("gunicorn", "project.wsgi", without=("--preload",))
    assert ("--preload" in command) is preload
    # When the workers serve for a window of RUNS heartbeats, then SIGTERM stops them
    # Then each occurrence ran once, in the workers only, never in the master
    master, rows, output = serve_a_window(project, command)
    workers = booted_workers(output)
    assert len(workers) == 4
    pids = {pid for _, _, pid in rows}
    assert master.pid not in pids and pids <= workers, output
    # and each worker stopped its scheduler gracefully on SIGTERM, leaving no lease
    assert output.count("scheduler started") == 4
    assert output.count("scheduler stopped") == 4
    if preload:
        assert "the scheduler starts in each worker after it forks" in output
    assert_no_lease_left(redis_server)


def test_runscheduler_processes_run_the_jobs_when_autostart_is_off(project, redis_server):
    # Given AUTOSTART off: gunicorn serves, two runscheduler processes run the jobs
    project.configure('PYSCHEDULER["AUTOSTART"] = False')
    master = project.spawn(readme_command("gunicorn", "project.wsgi", without=("--preload",)))
    schedulers = [project.spawn(readme_command("runscheduler")) for _ in range(2)]
    # When they run for a window
    assert "heartbeats" in project.wait_for(lambda: project.get(project.port), "the page")
    project.wait_for_heartbeats(RUNS)
    for process in schedulers:
        assert project.stop(process) == 0, project.output(process)
        assert "runscheduler: stopped gracefully" in project.output(process)
    assert project.stop(master) == 0, project.output(master)
    # Then each occurrence ran once, only in the runscheduler processes
    rows = project.heartbeats()
    assert_each_occurrence_once(rows)
    assert {pid for _, _, pid in rows} <= {process.pid for process in schedulers}
    assert "scheduler started" not in project.output(master)
    assert_no_lease_left(redis_server)


def test_runserver_runs_jobs_only_in_the_serving_child(project, redis_server):
    # Given the README's runserver command, with its autoreloader: the process started is
    # the watcher, which re-runs manage.py in a child that serves
    watcher = project.spawn([*readme_command("runserver"), f"127.0.0.1:{project.port}"])
    assert "heartbeats" in project.wait_for(lambda: project.get(project.port), "the page")
    project.wait_for_heartbeats(RUNS)
    # When Ctrl-C stops it (SIGINT to the terminal's process group)
    assert project.stop(watcher, signal.SIGINT, group=True) == 0, project.output(watcher)
    # Then the jobs ran in one process, the serving child, never in the watcher
    rows = project.heartbeats()
    assert_each_occurrence_once(rows)
    pids = {pid for _, _, pid in rows}
    assert len(pids) == 1 and watcher.pid not in pids
    output = project.output(watcher)
    assert output.count("scheduler started") == 1, output
    assert "starting the scheduler in runserver's serving process" in output
    assert "scheduler stopped" in output
    assert_no_lease_left(redis_server)


def test_uwsgi_workers_run_each_occurrence_once(project, redis_server):
    if shutil.which("uwsgi", path=f"{BIN}:/usr/bin:/usr/local/bin") is None:
        pytest.skip("no uwsgi binary")
    # Given the README's uWSGI command (the application loaded in the master), on our port
    command = readme_command("uwsgi", "project.wsgi")
    command[command.index("--http-socket") + 1] = f"127.0.0.1:{project.port}"
    # When its two workers serve for a window, then SIGTERM stops them
    # Then each occurrence ran once, in the workers, never in the master
    master, rows, output = serve_a_window(project, command)
    workers = {int(pid) for pid in re.findall(r"spawned uWSGI worker \d+ \(pid: (\d+)", output)}
    assert len(workers) == 2, output
    pids = {pid for _, _, pid in rows}
    assert master.pid not in pids and pids <= workers, output
    assert output.count("scheduler started") == 2, output
    assert output.count("scheduler stopped") == 2, output
    assert_no_lease_left(redis_server)
