"""The dashboard served over a real socket: ``make_server`` in a thread, and the
``pyscheduler dashboard`` command as an OS process, over a real redis-server."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from subprocess import Popen
from typing import Iterator, Optional

import pytest

from pyscheduler import (
    ConfigError,
    Control,
    FakeClock,
    IntervalSchedule,
    Job,
    MemoryBackend,
    RedisBackend,
)
from pyscheduler.cli import make_parser
from pyscheduler.contrib.dashboard import make_server
from pyscheduler.contrib.dashboard.server import PASSWORD_VARIABLE
from tests.readme_samples import console_commands

from ..helpers import START, WAIT, Schedulers

BOUND = 60.0  # seconds: generous upper bound for a process to start or stop


def fetch(url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    body = None if data is None else urllib.parse.urlencode(data).encode()
    try:
        with urllib.request.urlopen(url, body, timeout=WAIT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def shop(redis_server, schedulers: Schedulers) -> Iterator[str]:
    """A group "shop" on Redis with the job "report", registered by a stepped scheduler;
    yields the server's URL."""
    scheduler = schedulers.stepped(FakeClock(START),
                                   RedisBackend.from_url(redis_server.url, key_prefix="shop"))
    scheduler.register(Job("report", IntervalSchedule(3600), lambda: None))
    scheduler.start(background=False)
    yield redis_server.url


@pytest.mark.redis
def test_make_server_serves_the_pages_and_the_buttons(shop):
    with Control.from_url(shop, key_prefix="shop") as control, \
            make_server(control, port=0, log_requests=False) as server:
        serving = threading.Thread(target=server.serve_forever)
        serving.start()
        try:
            base = f"http://127.0.0.1:{server.server_port}"
            status, page = fetch(base + "/")
            assert status == 200 and '<tr data-job="report">' in page
            token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            # urllib follows the 303 to the jobs page, which shows the job paused
            status, page = fetch(base + "/pause", {"csrf": token, "name": "report"})
            assert status == 200 and "status-paused" in page
            assert control.job("report").paused
            assert fetch(base + "/resume", {"name": "report"})[0] == 403
        finally:
            server.shutdown()
            serving.join()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(url: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=WAIT) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.com"])
def test_make_server_needs_a_password_off_loopback(host, monkeypatch):
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match="is not a loopback address: serving the dashboard "
                                          "there needs a password"):
        make_server(Control(MemoryBackend()), host, 0)


@pytest.mark.parametrize("given", ["argument", "environment"])
def test_with_a_password_every_request_needs_it(given, monkeypatch, schedulers):
    clock = FakeClock(START)
    backend = MemoryBackend(clock)
    scheduler = schedulers.stepped(clock, backend)
    scheduler.register(Job("report", IntervalSchedule(3600), lambda: None))
    scheduler.start(background=False)
    monkeypatch.setenv(PASSWORD_VARIABLE, "from-env" if given == "environment" else "")
    password = "s3cret" if given == "argument" else "from-env"
    with make_server(Control(backend), "0.0.0.0", 0, log_requests=False,
                     password="s3cret" if given == "argument" else None) as server:
        serving = threading.Thread(target=server.serve_forever)
        serving.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/"
            status, _, headers = get(url, {})
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
            assert get(url, basic("admin", "wrong"))[0] == 401
            assert get(url, {"Authorization": "Basic !!"})[0] == 401
            status, page, _ = get(url, basic("admin", password))
            assert status == 200 and ">Pause</button>" in page
        finally:
            server.shutdown()
            serving.join()


# -- pyscheduler dashboard ---------------------------------------------------------------------


def test_the_dashboard_command_takes_its_redis_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYSCHEDULER_REDIS_URL", "redis://example:6379/1")
    monkeypatch.setenv("PYSCHEDULER_KEY_PREFIX", "shop")
    args = make_parser().parse_args(["dashboard"])
    assert (args.redis_url, args.key_prefix, args.host, args.port, args.read_only) == \
        ("redis://example:6379/1", "shop", "127.0.0.1", 8080, False)
    args = make_parser().parse_args(["dashboard", "--redis-url", "redis://other/0",
                                     "--key-prefix", "x", "--port", "0", "--read-only"])
    assert (args.redis_url, args.key_prefix, args.port, args.read_only) == \
        ("redis://other/0", "x", 0, True)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith("PYSCHEDULER_")}
    return subprocess.run([sys.executable, "-m", "pyscheduler", "dashboard", *args],
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=BOUND, check=False)


def test_the_dashboard_command_needs_a_redis_url():
    result = run()
    assert result.returncode == 2 and "--redis-url" in result.stderr


@pytest.mark.parametrize("args, error", [
    (["--redis-url", "http://nowhere"], "redis_url"),
    (["--redis-url", "redis://localhost/0", "--key-prefix", ""], "key_prefix"),
    (["--redis-url", "redis://localhost/0", "--port", "70000"], "--port"),
    (["--redis-url", "redis://localhost/0", "--host", "0.0.0.0"],
     "needs a password (PYSCHEDULER_DASHBOARD_PASSWORD)"),
])
def test_the_dashboard_command_refuses_bad_settings_in_one_line(args, error):
    result = run(*args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("pyscheduler dashboard: ") and error in line


def test_the_dashboard_command_says_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("--redis-url", "redis://localhost/0", "--port",
                     str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert result.stderr.startswith("pyscheduler dashboard: error: cannot listen on 127.0.0.1:")


def console_script() -> str:
    script = Path(sys.executable).with_name("pyscheduler")
    if not script.exists():
        pytest.skip("the pyscheduler console script is not installed next to sys.executable")
    return str(script)


def readme_dashboard_command(redis_url: str) -> list[str]:
    """The README's ``pyscheduler dashboard`` command, on ``redis_url`` and a free port."""
    (line,) = [command for command in console_commands() if " dashboard " in command]
    words = shlex.split(line)
    assert words[:2] == ["pyscheduler", "dashboard"]
    words[words.index("--redis-url") + 1] = redis_url
    words[words.index("--port") + 1] = "0"
    return [console_script(), *words[1:]]


@contextlib.contextmanager
def dashboard_process(argv: list[str],
                      env: Optional[dict[str, str]] = None) -> Iterator[tuple[Popen, str]]:
    """The dashboard command running, with the first line it printed; killed at the end if
    the test did not stop it."""
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        yield process, process.stderr.readline()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=BOUND)
        process.stderr.close()


@pytest.mark.redis
def test_the_readme_dashboard_command_serves_the_group_until_sigterm(shop):
    # Given the README's command serving the group "shop" (on a free port)
    with dashboard_process(readme_dashboard_command(shop)) as (process, line):
        # When it says where it listens
        match = re.search(r"the group 'shop' at (http://127\.0\.0\.1:\d+/)", line)
        assert match, line

        # Then it serves the group's jobs there
        status, page = fetch(match.group(1))
        assert status == 200 and '<tr data-job="report">' in page
        assert shop not in line  # the URL, which may hold a password, is not printed

        # And SIGTERM stops it, with status 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=BOUND) == 0


@pytest.mark.redis
def test_the_dashboard_command_takes_the_group_from_the_environment(shop):
    env = {**os.environ, "PYSCHEDULER_REDIS_URL": shop, "PYSCHEDULER_KEY_PREFIX": "shop"}
    argv = [sys.executable, "-m", "pyscheduler", "dashboard", "--port", "0"]
    with dashboard_process(argv, env) as (process, line):
        url = re.search(r"the group 'shop' at (http://\S+/)", line).group(1)
        assert '<tr data-job="report">' in fetch(url)[1]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=BOUND) == 0
