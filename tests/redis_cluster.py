"""A real Redis Cluster for the tests: three ``redis-server --cluster-enabled yes`` masters
on free loopback ports, joined by ``redis-cli --cluster create`` (no replicas), which gives
each master one contiguous third of the slots."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from .redis_server import START_TIMEOUT, RedisServer, free_port, redis_server_binary

__all__ = ["RedisClusterServers"]


class _ClusterNodeServer(RedisServer):
    """One master: its cluster bus on a port of its own (not port + 10000, which may be
    taken or out of range)."""

    def __init__(self, directory: Path) -> None:
        self.bus_port = free_port()
        super().__init__(directory, "--cluster-enabled", "yes",
                         "--cluster-node-timeout", "5000")

    def listen_options(self) -> list[str]:
        return ["--port", str(self.port), "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.directory / f"nodes-{self.port}.conf")]


class RedisClusterServers:
    """Three masters started and joined at construction; :meth:`stop` ends them."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        redis_server_binary()  # first: without it, skip (or fail in CI) as every Redis test
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.skip("redis-cli not found on PATH")
        self.nodes: list[_ClusterNodeServer] = []
        try:
            for _ in range(masters):
                self.nodes.append(_ClusterNodeServer(directory))
            subprocess.run([cli, "--cluster", "create",
                            *(f"127.0.0.1:{node.port}" for node in self.nodes),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT * 3
        for node in self.nodes:
            client = node.client()
            try:
                while True:
                    info = client.cluster("INFO")
                    state = info.get("cluster_state") if isinstance(info, dict) else None
                    if state == "ok" and int(info.get("cluster_known_nodes", 0)) == len(
                            self.nodes):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the cluster did not come up: {info!r}")
                    time.sleep(0.05)
            finally:
                client.close()

    @property
    def url(self) -> str:
        """A URL of the first master (a cluster client finds the others)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def client(self, **kwargs: Any) -> RedisCluster:
        """A new cluster client."""
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port)
                                           for node in self.nodes], **kwargs)

    def node_clients(self) -> list[redis.Redis]:
        """A plain client to each master (close them)."""
        return [node.client() for node in self.nodes]

    def flush(self) -> None:
        for client in self.node_clients():
            try:
                client.flushall()
                client.script_flush()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
