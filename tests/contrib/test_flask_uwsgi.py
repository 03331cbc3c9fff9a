"""The README's Flask application under real uWSGI (a master and 4 workers, the application
loaded in the master or, with ``--lazy-apps``, in each worker), on a real redis-server.

Skipped when no ``uwsgi`` binary is found. Real time on Redis's clock, polled with generous
upper bounds, as in test_flask_gunicorn.py.
"""

from __future__ import annotations

import shutil
import signal

import pytest

from tests.redis_server import free_port

from .flask_served import BIN, Served, readme_command

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture
def served(redis_server_factory, tmp_path):
    if not ((BIN / "uwsgi").exists() or shutil.which("uwsgi")):
        pytest.skip("uwsgi not found")
    server = redis_server_factory()
    app = Served(tmp_path, server.url)
    app.redis = server
    yield app
    app.close()


def with_port(command: list[str], port: int) -> list[str]:
    where = command.index("--http-socket") + 1
    return [*command[:where], f"127.0.0.1:{port}", *command[where + 1:]]


@pytest.mark.parametrize("lazy", [False, True], ids=["loaded-in-master", "lazy-apps"])
def test_uwsgi_workers_run_each_occurrence_once_and_the_master_none(served, lazy):
    # Given the README's uWSGI command line, on a free port, with or without --lazy-apps
    command = readme_command("uwsgi", "--enable-threads", "--die-on-term")
    assert command[1:5] == ["--master", "--processes", "4", "--enable-threads"]
    port = free_port()
    master = served.start(with_port(command, port) + (["--lazy-apps"] if lazy else []),
                          cwd=served.directory)

    # When it serves for a few occurrences of the heartbeat (every 0.5 s)
    window = served.window(served.wait_until_serving(port))
    served.wait_for_run(window[-1])

    # Then every occurrence of the window ran exactly once, in uWSGI's workers only
    served.assert_each_ran_once_in_workers(window, master)

    # When the master gets SIGTERM (--die-on-term: a shutdown, not a reload)
    assert served.stop(signal.SIGTERM) == 0, served.log()

    # Then no lease is left behind
    served.assert_no_lease_left()
