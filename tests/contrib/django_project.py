"""The Django project of README.rst's Django section, built in a temporary folder and run
for real: ``manage.py`` commands, gunicorn, runserver and uWSGI as OS processes.

The project is the files under ``tests/contrib/djangoproject/`` (what ``startproject``
writes: manage.py, wsgi.py, urls.py) plus the README's ``# file: djangoproject/...``
samples (settings.py, the app's models.py and jobs.py). Its migrations are made once per
session with the README's own commands; each test gets a copy with a migrated database.
Each run of the heartbeat job is a ``myapp_heartbeat`` row, which the tests read with
sqlite3 as the history of runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, TypeVar

from tests.readme_samples import console_commands, write_sample_files

__all__ = ["BOUND", "DjangoProject", "Heartbeat", "build_project", "copy_project",
           "readme_command"]

FIXTURE = Path(__file__).resolve().parent / "djangoproject"
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BOUND = 60.0  # generous upper bound, in seconds, for anything awaited

T = TypeVar("T")
Heartbeat = tuple[int, int, int]  # (scheduled_ms, fence, pid)


def readme_command(*words: str, without: tuple[str, ...] = ()) -> list[str]:
    """The README's one console command that has every word of ``words`` and none of
    ``without``, as argv, with ``python`` and the servers taken from this virtualenv."""
    found = [command for command in console_commands()
             if all(word in shlex.split(command) for word in words)
             and not any(word in shlex.split(command) for word in without)]
    assert len(found) == 1, f"README commands with {words}: {found}"
    argv = shlex.split(found[0])
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    binary = BIN / argv[0]
    return [str(binary) if binary.exists() else argv[0], *argv[1:]]


def build_project(directory: Path) -> Path:
    """Write the project into ``directory/djangoproject``, make its migrations and migrate
    (the README's commands); returns the project folder."""
    project = directory / "djangoproject"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("__pycache__"))
    assert write_sample_files(directory, prefix="djangoproject/"), "no Django samples"
    for command in (readme_command("makemigrations"), readme_command("migrate")):
        result = subprocess.run(command, cwd=project, env=_env({}), capture_output=True,
                                text=True, timeout=BOUND, check=False)
        assert result.returncode == 0, result.stderr
    return project


def copy_project(built: Path, directory: Path, env: dict[str, str]) -> DjangoProject:
    """A fresh copy of the ``built`` project (migrated database included) in ``directory``."""
    path = directory / "djangoproject"
    shutil.copytree(built, path, ignore=shutil.ignore_patterns("__pycache__", "*.log"))
    return DjangoProject(path, env)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "PYSCHEDULER", "REDIS_URL", "HEARTBEAT_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)  # pyscheduler from this checkout
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class DjangoProject:
    """A copy of the project in ``path``, with the processes a test started in it.

    :param env: environment variables of every process (``REDIS_URL``, ``HEARTBEAT_SECONDS``).
    """

    def __init__(self, path: Path, env: Optional[dict[str, str]] = None) -> None:
        self.path = path
        self.env = dict(env or {})
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    @property
    def database(self) -> Path:
        return self.path / "db.sqlite3"

    def configure(self, text: str) -> None:
        """Append ``text`` (Python) to settings.py, e.g. ``PYSCHEDULER["AUTOSTART"] = False``."""
        settings = self.path / "project" / "settings.py"
        settings.write_text(settings.read_text(encoding="utf-8") + "\n" + text + "\n",
                            encoding="utf-8")

    def run(self, argv: list[str], timeout: float = BOUND) -> subprocess.CompletedProcess[str]:
        """Run a command in the project to its end."""
        return subprocess.run(argv, cwd=self.path, env=_env(self.env), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python manage.py <args>``."""
        return self.run([sys.executable, "manage.py", *args])

    def spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start a long-running command in its own process group, output to a log file."""
        log = self.path / f"process-{len(self.processes)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, cwd=self.path, env=_env(self.env), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        self._logs[process.pid] = log
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        """What ``process`` wrote so far (stdout and stderr)."""
        return self._logs[process.pid].read_text(encoding="utf-8", errors="replace")

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
             group: bool = False) -> int:
        """Send ``sig`` (to the whole process group with ``group``) and wait for the exit."""
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        try:
            return process.wait(BOUND)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{process.args} did not exit on {sig}:\n"
                                 f"{self.output(process)}") from None

    def close(self) -> None:
        """Kill whatever the test left running, children included."""
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                process.wait(BOUND)
            except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
                pass

    def heartbeats(self, database: Optional[Path] = None) -> list[Heartbeat]:
        """Every recorded run of the heartbeat job, in order of occurrence."""
        connection = sqlite3.connect(database or self.database, timeout=20)
        try:
            rows = connection.execute(
                "SELECT scheduled_at, fence, pid FROM myapp_heartbeat").fetchall()
        finally:
            connection.close()
        return sorted((_ms(at), fence, pid) for at, fence, pid in rows)

    def wait_for(self, probe: Callable[[], Optional[T]], what: str,
                 alive: Optional[list[subprocess.Popen[bytes]]] = None) -> T:
        """Poll ``probe`` until it returns something, failing if a process of ``alive``
        (default: every process started) exits first, or after :data:`BOUND` seconds."""
        deadline = time.monotonic() + BOUND
        watched = self.processes if alive is None else alive
        while True:
            found = probe()
            if found:
                return found
            for process in watched:
                if process.poll() is not None:
                    raise AssertionError(f"{process.args} exited with {process.returncode} "
                                         f"while waiting for {what}:\n{self.output(process)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def wait_for_heartbeats(self, count: int, alive: Optional[list[subprocess.Popen[bytes]]]
                            = None, database: Optional[Path] = None) -> list[Heartbeat]:
        """Wait until at least ``count`` runs are recorded (in ``database``); returns them."""
        def enough() -> Optional[list[Heartbeat]]:
            rows = self.heartbeats(database)
            return rows if len(rows) >= count else None

        return self.wait_for(enough, f"{count} heartbeats", alive)

    def get(self, port: int) -> Optional[str]:
        """The project's page served on ``port``, or ``None`` while nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return response.read().decode()
        except OSError:
            return None


def _ms(text: str) -> int:
    # Django stores an aware DateTimeField in SQLite as UTC text without an offset.
    at = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return round(at.timestamp() * 1000)
