"""A real ``redis-server`` process for the tests, on a free loopback port.

No mocks: the Redis tests run against the binary found on ``PATH``. Without one they are
skipped, unless ``PYSCHEDULER_REQUIRE_REDIS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisServer", "free_port", "redis_server_binary"]

#: how long a server may take to answer its first PING (real seconds)
START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The ``redis-server`` binary; skips the test (or fails it in CI) when there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("PYSCHEDULER_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server not found on PATH (PYSCHEDULER_REQUIRE_REDIS=1)")
        pytest.skip("redis-server not found on PATH")
    return binary


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` without persistence, started at construction.

    :param directory: its working directory (and log file).
    :param password: started with ``--requirepass`` when set.
    :param args: more ``redis-server`` options, e.g. ``"--maxmemory", "10mb"``.
    """

    def __init__(self, directory: Path, *args: str, password: str = "") -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.password = password
        self.args = args
        self.port = free_port()
        self.log = directory / f"redis-{self.port}.log"
        self._process: Optional[subprocess.Popen[bytes]] = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client to this server (with its password unless given another)."""
        kwargs.setdefault("password", self.password or None)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self) -> None:
        """Start the server on :attr:`port` and wait until it answers."""
        command = [self.binary, *self.listen_options(), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                   "--daemonize", "no", *self.args]
        if self.password:
            command += ["--requirepass", self.password]
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_ready()

    def listen_options(self) -> list[str]:
        """The options that make the server listen on :attr:`port` (TLS servers override)."""
        return ["--port", str(self.port)]

    def _wait_until_ready(self) -> None:
        probe = self.client(socket_connect_timeout=0.5, socket_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start:\n{self.log.read_text()}")
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not answer "
                                           f"within {START_TIMEOUT} s") from None
                    time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        """Stop the server (its data is lost: nothing is persisted)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port, with every key lost."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None
