"""Real Redis deployments for tests/test_redis_deploy.py: a TLS server with its own CA, and a
Sentinel group (a master, a replica, three sentinels), all on free loopback ports.

Certificates are made with the ``openssl`` command line in the test's directory. Like
``tests/redis_server.py``, a missing binary (or a redis-server built without TLS) skips the
test, unless ``PYSCHEDULER_REQUIRE_REDIS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.redis_server import RedisServer, free_port, redis_server_binary

__all__ = ["SentinelGroup", "TlsFiles", "TlsRedisServer", "make_tls_files", "wait_until"]

#: generous upper bound (real seconds) for a deployment to settle
SETTLE = 30.0


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("PYSCHEDULER_REQUIRE_REDIS") == "1":
        pytest.fail(f"{reason} (PYSCHEDULER_REQUIRE_REDIS=1)")
    pytest.skip(reason)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = SETTLE) -> Any:
    """Poll ``condition`` until it returns something true (which is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except redis.RedisError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Make a throw-away CA and a server certificate with the ``openssl`` command line."""
    openssl = shutil.which("openssl")
    if openssl is None:
        _skip_or_fail("openssl not found on PATH (needed to make the TLS test certificates)")
    assert openssl is not None
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    # Python's strict verification wants a CA with key usages and a leaf naming its issuer.
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                          "basicConstraints = critical, CA:FALSE\n"
                          "keyUsage = critical, digitalSignature, keyEncipherment\n"
                          "extendedKeyUsage = serverAuth\n"
                          "authorityKeyIdentifier = keyid\n"
                          "subjectKeyIdentifier = hash\n", encoding="ascii")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=pyscheduler test CA", "-keyout", ca_key, "-out", ca_cert,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-set_serial", "1",
         "-days", "2", "-extfile", extensions, "-out", cert],
    ):
        subprocess.run([openssl, *map(str, command)], check=True, capture_output=True)
    return TlsFiles(ca_cert, cert, key)


class TlsRedisServer(RedisServer):
    """A redis-server that listens on :attr:`port` with TLS only (no plain-text port)."""

    def __init__(self, directory: Path, tls: TlsFiles, *args: str, password: str = "") -> None:
        self.tls = tls
        try:
            super().__init__(directory, *args, password=password)
        except RuntimeError:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "tls" in log.lower() and ("not" in log.lower() or "bad" in log.lower()):
                _skip_or_fail(f"this redis-server has no TLS support: {log.strip()[-300:]}")
            raise

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca_cert}"

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("ssl", True)
        kwargs.setdefault("ssl_ca_certs", str(self.tls.ca_cert))
        return super().client(**kwargs)

    def listen_options(self) -> list[str]:
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca_cert), "--tls-auth-clients", "no"]


# -- Sentinel ----------------------------------------------------------------------------------


def _sentinel_command() -> list[str]:
    """``redis-sentinel``, or ``redis-server … --sentinel`` (the same program)."""
    sentinel = shutil.which("redis-sentinel")
    return [sentinel] if sentinel else [redis_server_binary()]


class _Sentinel:
    """One sentinel process monitoring ``service`` at ``master_port``."""

    def __init__(self, directory: Path, service: str, master_port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = directory / f"sentinel-{self.port}.log"
        conf = directory / "sentinel.conf"  # sentinels rewrite their file: one each
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 10000\n"
            f"sentinel parallel-syncs {service} 1\n", encoding="ascii")
        command = [*_sentinel_command(), str(conf), "--sentinel"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                                  socket_connect_timeout=2, retry=Retry(NoBackoff(), 0),
                                  decode_responses=True)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class SentinelGroup:
    """A master, one replica and three sentinels (quorum 2) on loopback, ready to fail over.

    :param directory: a directory of its own; each process gets a subdirectory.
    """

    service = "mymaster"

    def __init__(self, directory: Path) -> None:
        self.nodes: list[RedisServer] = []
        self.sentinels: list[_Sentinel] = []
        try:
            for name in ("node-a", "node-b"):
                (directory / name).mkdir(parents=True)
            master = RedisServer(directory / "node-a")
            self.nodes.append(master)
            self.nodes.append(RedisServer(directory / "node-b", "--replicaof", "127.0.0.1",
                                          str(master.port)))
            self.sentinels = [_Sentinel(directory / f"sentinel-{n}", self.service, master.port)
                              for n in range(3)]
            wait_until(self._ready, "the replica in sync and every sentinel seeing the group")
        except BaseException:
            self.stop()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels' (host, port), as :class:`redis.sentinel.Sentinel` takes them."""
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    def node(self, port: int) -> RedisServer:
        (node,) = [node for node in self.nodes if node.port == port]
        return node

    def role(self, port: int) -> str:
        client = self.node(port).client(decode_responses=True, socket_timeout=2)
        try:
            return str(client.info("replication")["role"])
        finally:
            client.close()

    def master_port(self) -> Optional[int]:
        """The master's port as every sentinel reports it, or ``None`` while they disagree."""
        ports = {int(s.client.sentinel_get_master_addr_by_name(self.service)[1])
                 for s in self.sentinels}
        return ports.pop() if len(ports) == 1 else None

    def _ready(self) -> bool:
        for process in [s.process for s in self.sentinels]:
            if process.poll() is not None:
                raise RuntimeError("a sentinel exited at start:\n"
                                   + "\n".join(s.log.read_text() for s in self.sentinels))
        master, replica = self.nodes
        client = replica.client(decode_responses=True, socket_timeout=2)
        try:
            if client.info("replication").get("master_link_status") != "up":
                return False
        finally:
            client.close()
        for sentinel in self.sentinels:
            state = sentinel.client.sentinel_master(self.service)
            replicas = sentinel.client.sentinel_slaves(self.service)
            if (int(state["num-other-sentinels"]) < 2 or len(replicas) != 1
                    or replicas[0]["master-link-status"] != "ok"
                    or replicas[0]["is_sdown"]):
                return False
        return True

    def fail_over(self) -> int:
        """Make a sentinel promote the replica (``SENTINEL FAILOVER``) and wait until the
        group has settled: every sentinel names the new master and the old one replicates it.

        :returns: the new master's port.
        """
        old = self.master_port()
        assert old is not None
        self.sentinels[0].client.execute_command("SENTINEL", "FAILOVER", self.service)
        new: int = wait_until(lambda: (port := self.master_port()) != old and port,
                              "every sentinel naming the new master")
        wait_until(lambda: self.role(new) == "master" and self.role(old) == "slave",
                   "the old master replicating the new one")
        return new

    def freeze_sentinel(self, index: int, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) a sentinel: it accepts connections and answers nothing."""
        self.sentinels[index].process.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def kill_master(self) -> RedisServer:
        """SIGKILL the master process (its sentinels then fail over on their own)."""
        port = self.master_port()
        assert port is not None
        node = self.node(port)
        process = node._process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=5)
        return node

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.process.send_signal(signal.SIGCONT)
            sentinel.stop()
        for node in self.nodes:
            node.stop()
