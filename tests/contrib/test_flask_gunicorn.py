"""The README's Flask application under real gunicorn (4 workers, with and without
``--preload``) and under ``flask run --debug`` (the reloader), on a real redis-server.

Real time on Redis's clock: the heartbeat runs every 0.5 s and the tests poll its history
with generous upper bounds, never sleeping through a schedule.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time

import pytest

from tests.readme_samples import console_commands
from tests.redis_server import free_port

from .flask_served import Served, parent_pid, readme_command

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture
def served(redis_server_factory, tmp_path):
    server = redis_server_factory()
    app = Served(tmp_path, server.url)
    app.redis = server
    yield app
    app.close()


@pytest.mark.parametrize("preload", [False, True], ids=["plain", "preload"])
def test_gunicorn_workers_run_each_occurrence_once_and_the_master_none(served, preload):
    # Given the README's gunicorn command line, with or without --preload, on a free port
    command = readme_command("gunicorn", "-w", *(["--preload"] if preload else []),
                             without=() if preload else ("--preload",))
    assert command[:3] == ["gunicorn", "-w", "4"]
    port = free_port()
    master = served.start(command, cwd=served.directory,
                          GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}")

    # When it serves for a few occurrences of the heartbeat (every 0.5 s)
    window = served.window(served.wait_until_serving(port))
    served.wait_for_run(window[-1])

    # Then every occurrence of the window ran exactly once, and none ran twice ever, in
    # gunicorn's workers, never in the master, inside the application's context
    served.assert_each_ran_once_in_workers(window, master)
    # fences grow with the occurrences
    fences = [run["fence"] for run in sorted(served.runs(), key=lambda r: r["scheduled_ms"])]
    assert fences == sorted(set(fences))

    # When the master gets SIGTERM
    assert served.stop(signal.SIGTERM) == 0, served.log()

    # Then the workers stopped their schedulers gracefully: no lease is left behind
    served.assert_no_lease_left()


def test_flask_run_with_the_reloader_runs_jobs_only_in_the_serving_child(served):
    # Given the README's development server command (the reloader is on with --debug), on
    # the in-memory backend: a scheduler in the watcher too would run every occurrence twice
    command = readme_command("flask", "run", "--debug")
    port = free_port()
    served.env["FLASK_PYSCHEDULER_BACKEND_TYPE"] = "memory"
    watcher = served.start(command, cwd=served.directory / "flaskapp", FLASK_RUN_PORT=str(port))

    # When it serves for a few occurrences
    window = served.window(served.wait_until_serving(port), occurrences=4)
    served.wait_for_run(window[-1])

    # Then they ran once each, all in the serving child, none in the watcher
    runs = served.runs()
    pids = {run["pid"] for run in runs}
    assert watcher.pid not in pids
    (child,) = pids
    assert parent_pid(child) == watcher.pid
    counts = served.counts()
    assert max(counts.values()) == 1 and all(counts[ms] == 1 for ms in window)
    assert {run["app"] for run in runs} == {"app"}
    # and nothing more happens in the watcher later
    served.wait_for_run(window[-1] + 1000)
    assert {run["pid"] for run in served.runs()} == {child}
    assert "Traceback" not in served.log(), served.log()


def test_gunicorn_without_autostart_runs_no_job(served):
    # Given the README's command that serves requests only (FLASK_PYSCHEDULER_AUTOSTART=false)
    (line,) = [c for c in console_commands() if c.startswith("FLASK_PYSCHEDULER_AUTOSTART=")]
    assignment, *command = shlex.split(line)
    name, _, value = assignment.partition("=")
    port = free_port()
    served.start(command, cwd=served.directory, GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}",
                 **{name: value})

    # When it serves past the heartbeat's first occurrences
    serving_since = served.wait_until_serving(port)
    deadline = max(served.start_at, serving_since) + 1.5
    while time.time() < deadline:  # waiting for occurrences that must not run
        time.sleep(0.1)

    # Then none ran, and the job was never stored
    assert served.runs() == []
    client = served.redis.client()
    try:
        assert not client.exists("{flaskapp}:job:heartbeat")
    finally:
        client.close()
    assert served.stop() == 0


def test_app_run_debug_in_a_script_runs_jobs_only_in_the_serving_child(served):
    # Given a script that builds the README's application and calls app.run(debug=True): the
    # application (and its scheduler) is built in the watcher too, before the reloader starts
    script = served.directory / "flaskapp" / "devserver.py"
    script.write_text("import os\n\nfrom app import create_app\n\n"
                      "create_app().run(debug=True, port=int(os.environ['PORT']))\n")
    port = free_port()
    served.env["FLASK_PYSCHEDULER_BACKEND_TYPE"] = "memory"
    watcher = served.start([sys.executable, script.name], cwd=script.parent, PORT=str(port))

    # When it serves for a few occurrences
    window = served.window(served.wait_until_serving(port), occurrences=4)
    served.wait_for_run(window[-1])

    # Then they ran once each, all in the serving child, none in the watcher
    pids = {run["pid"] for run in served.runs()}
    assert watcher.pid not in pids
    (child,) = pids
    assert parent_pid(child) == watcher.pid
    counts = served.counts()
    assert max(counts.values()) == 1 and all(counts[ms] == 1 for ms in window)
    assert "Traceback" not in served.log(), served.log()
