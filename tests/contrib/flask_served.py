"""The README's Flask application served by real servers (gunicorn, uWSGI, ``flask run``),
for the multi-process tests of the Flask extension.

The application is written out from README.rst and configured by environment variables: the
Redis URL, and the heartbeat job's interval, alignment and history file. Its handler appends
one JSON line per run (job, scheduled_ms, fence, pid, current_app's name); the tests check
that history. Each server runs in a session of its own, killed whole at teardown.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from tests.readme_samples import console_commands, write_sample_files

__all__ = ["BOUND", "EVERY", "Served", "aligned", "parent_pid", "readme_command"]

BOUND = 60.0  # generous upper bound, in seconds, for any awaited event
EVERY = 0.5  # the heartbeat's interval in these tests
BIN = Path(sys.executable).parent


def readme_command(program: str, *flags: str, without: tuple[str, ...] = ()) -> list[str]:
    """The README's console command for ``program`` on the Flask application with ``flags``
    and ``without`` any of ``without`` (not one that sets environment variables first)."""
    for line in console_commands():
        words = shlex.split(line)
        if words[0] == program and "create_app" in line and set(flags) <= set(words) \
                and not set(without) & set(words):
            return words
    raise AssertionError(f"README.rst gives no {program} command with {flags}")


def aligned(every: float, lead: float) -> float:
    """An epoch time at least ``lead`` seconds ahead, on a multiple of ``every``."""
    return math.ceil((time.time() + lead) / every) * every


def parent_pid(pid: int) -> Optional[int]:
    """The parent of a live process (Linux ``/proc``), or ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


class Served:
    """The README application in ``directory/flaskapp``, served by one server process."""

    def __init__(self, directory: Path, redis_url: str, backend: str = "redis") -> None:
        write_sample_files(directory, prefix="flaskapp/")
        self.directory = directory
        self.history_path = directory / "heartbeat.jsonl"
        self.log_path = directory / "server.log"
        self.start_at = aligned(EVERY, lead=2.0)
        self.env = dict(os.environ, REDIS_URL=redis_url, HEARTBEAT_EVERY=str(EVERY),
                        HEARTBEAT_START=repr(self.start_at), HEARTBEAT_LOG=str(self.history_path),
                        FLASK_PYSCHEDULER_BACKEND_TYPE=backend)
        for marker in ("FLASK_RUN_FROM_CLI", "WERKZEUG_RUN_MAIN", "FLASK_DEBUG"):
            self.env.pop(marker, None)  # a process of ours must not look like a flask command
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self, command: list[str], cwd: Path, **env: str) -> subprocess.Popen[bytes]:
        program = str(BIN / command[0]) if (BIN / command[0]).exists() else command[0]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([program, *command[1:]], cwd=cwd,
                                            env={**self.env, **env}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self.process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_serving(self, port: int) -> float:
        """Wait for the first HTTP answer; :returns: when it came (epoch seconds)."""
        deadline = time.monotonic() + BOUND
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    assert answer.status == 200
                    return time.time()
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.monotonic() < deadline, f"not serving on {port}:\n{self.log()}"
                time.sleep(0.05)

    def runs(self) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        lines = self.history_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for_run(self, scheduled_ms: int) -> None:
        """Poll the history until the occurrence at ``scheduled_ms`` (or a later one) ran."""
        deadline = time.monotonic() + BOUND
        while not any(run["scheduled_ms"] >= scheduled_ms for run in self.runs()):
            self._check_alive()
            assert time.monotonic() < deadline, f"no run at {scheduled_ms}:\n{self.log()}"
            time.sleep(0.05)

    def window(self, serving_since: float, occurrences: int = 6) -> list[int]:
        """The occurrences (epoch ms) of the first ``occurrences`` after the server served and
        every worker had a moment to start."""
        first = max(self.start_at, math.ceil((serving_since + 1.0) / EVERY) * EVERY)
        return [round((first + k * EVERY) * 1000) for k in range(occurrences)]

    def counts(self) -> Counter[int]:
        return Counter(run["scheduled_ms"] for run in self.runs() if run["job"] == "heartbeat")

    def assert_each_ran_once_in_workers(self, window: list[int],
                                        master: subprocess.Popen[bytes]) -> None:
        """Every occurrence of ``window`` ran exactly once and none ever twice, in children
        of ``master`` (never in it), inside the application's context."""
        counts = self.counts()
        assert {ms: counts[ms] for ms in window} == dict.fromkeys(window, 1), self.log()
        assert max(counts.values()) == 1, [ms for ms, n in counts.items() if n > 1]
        workers = {run["pid"]: parent_pid(run["pid"]) for run in self.runs()}
        assert master.pid not in workers
        assert set(workers.values()) == {master.pid}, workers
        assert {run["app"] for run in self.runs()} == {"app"}

    def assert_no_lease_left(self) -> None:
        """The job is stored in :attr:`redis` (the fixture's server) and no lease of it is
        left (after a graceful stop)."""
        client = self.redis.client()
        try:
            assert client.exists("{flaskapp}:job:heartbeat")
            assert client.keys("{flaskapp}:lease:*") == []
        finally:
            client.close()
        assert "Traceback" not in self.log(), self.log()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server's main process and wait for it; :returns: its exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(BOUND)

    def close(self) -> None:
        """Kill whatever is left of the server's session (workers, reloader children)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(BOUND)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited ({self.process.returncode}):\n{self.log()}")
