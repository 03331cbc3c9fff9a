"""A private, throw-away redis-server for the ``*-redis`` systems.

It listens on a free loopback port, keeps nothing on disk (``--save "" --appendonly no``),
is flushed before every run and terminated at the end. A Redis already running on the
usual port is never touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import Optional

__all__ = ["RedisServer", "RedisUnavailableError"]

DEFAULT_BINARY = "/usr/bin/redis-server"


class RedisUnavailableError(RuntimeError):
    """No redis-server binary, or it did not come up."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """``with RedisServer.launch() as server:`` — ``server.host``, ``server.port``."""

    host = "127.0.0.1"

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        import redis

        self.client = redis.Redis(host=self.host, port=port)

    @classmethod
    def launch(cls, binary: Optional[str] = None, attempts: int = 3) -> RedisServer:
        """Start a server and wait until it answers PING.

        :raises RedisUnavailableError: no binary, or it did not answer within 10 s.
        """
        binary = binary or shutil.which("redis-server") or DEFAULT_BINARY
        if not shutil.which(binary):
            raise RedisUnavailableError(f"no redis-server binary ({binary})")
        error = "did not start"
        for _ in range(attempts):  # the free port may be taken between probe and bind
            port = _free_port()
            process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", cls.host, "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            server = cls(process, port)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    server.client.ping()
                    return server
                except Exception as exc:  # not listening yet
                    error = str(exc)
                    time.sleep(0.05)
            if process.poll() is not None:
                error = f"exited with status {process.returncode}"
            server.stop()
        raise RedisUnavailableError(f"redis-server did not come up: {error}")

    def flush(self) -> None:
        self.client.flushall()

    def cpu_seconds(self) -> Optional[float]:
        """User plus system CPU time the server has used so far (``None`` without psutil)."""
        try:
            import psutil
        except ImportError:
            return None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
