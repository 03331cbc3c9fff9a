"""The redis-py clients of RedisBackend: where they point, and the refresher's own client.

A lease refresh must fail fast rather than keep a holder running past its lease while
redis-py waits (R6), so the refresher gets a client of its own to the same server (or
Sentinel master, or Cluster) with bounded timeouts and at most one retry.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import SSLConnection
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from ..errors import BackendUnavailableError

__all__ = [
    "Client",
    "POOL_BOUND_KWARGS",
    "REFRESH_TIMEOUT",
    "address_of",
    "bounded_sentinel",
    "close_refresh_client",
    "cluster_client",
    "host_port",
    "refresh_client_for",
    "refresh_cluster_client_for",
    "servers_of",
]

#: A client of one Redis server (or of the master Sentinel names), or of a Redis Cluster.
Client = Union["redis.Redis", RedisCluster]

#: Socket timeouts of the refresher's client.
REFRESH_TIMEOUT = 2.0

#: connection kwargs bound to the pool they came from, not to be copied into another pool
POOL_BOUND_KWARGS = ("maint_notifications", "orig_", "himport_registry")


def address_of(client: Client) -> str:
    if isinstance(client, RedisCluster):  # the node it was given and any it found since
        nodes = ",".join(host_port({"host": node.host, "port": node.port})
                         for node in client.get_nodes())  # type: ignore[no-untyped-call]
        return f"redis-cluster://{nodes}"
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if isinstance(pool, SentinelConnectionPool):  # the master moves: name who says where
        sentinels = ",".join(host_port(sentinel.connection_pool.connection_kwargs)
                             for sentinel in pool.sentinel_manager.sentinels)
        return f"sentinel://{sentinels}/{pool.service_name}/{db}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{host_port(kwargs)}/{db}"


def host_port(kwargs: dict[str, Any]) -> str:
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{kwargs.get('port', 6379)}"


def refresh_client_for(client: Client) -> Client:
    """A client to the same server with bounded timeouts and at most one retry (R6); for a
    Sentinel client, one that follows the master as the sentinels name it; for a cluster
    client, a cluster client to the same nodes."""
    if isinstance(client, RedisCluster):
        return refresh_cluster_client_for(client)
    pool = client.connection_pool
    kwargs = {key: value for key, value in pool.connection_kwargs.items()
              if not key.startswith(POOL_BOUND_KWARGS)}
    kwargs.update(socket_timeout=REFRESH_TIMEOUT, socket_connect_timeout=REFRESH_TIMEOUT,
                  retry=Retry(NoBackoff(), 1))
    kwargs.pop("retry_on_timeout", None)
    refresh_pool: redis.ConnectionPool
    if isinstance(pool, SentinelConnectionPool):
        # A pool of the Sentinel kind, on sentinels of its own: the given pool's proxy
        # (under "connection_pool") only drops that pool's connections to a replaced master,
        # and the given sentinels may wait without bounds.
        del kwargs["connection_pool"]
        refresh_pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            pool.service_name, bounded_sentinel(pool.sentinel_manager),
            connection_class=pool.connection_class, is_master=pool.is_master,
            check_connection=pool.check_connection, **kwargs)
    else:
        refresh_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=refresh_pool)


def refresh_cluster_client_for(client: RedisCluster) -> RedisCluster:
    node = client.get_default_node()  # type: ignore[no-untyped-call]
    connection = client.get_redis_connection(node)
    pool = connection.connection_pool
    kwargs = {key: value for key, value in pool.connection_kwargs.items()
              if not key.startswith(POOL_BOUND_KWARGS)
              and key not in ("host", "port", "redis_connect_func", "retry", "db")}
    kwargs.pop("retry_on_timeout", None)
    if issubclass(pool.connection_class, SSLConnection):
        kwargs["ssl"] = True
    known = client.get_nodes()  # type: ignore[no-untyped-call]
    nodes = [ClusterNode(node.host, node.port) for node in known]  # type: ignore[no-untyped-call]
    return RedisCluster(
        startup_nodes=nodes, socket_timeout=REFRESH_TIMEOUT,
        socket_connect_timeout=REFRESH_TIMEOUT, retry=Retry(NoBackoff(), 1), **kwargs)


def cluster_client(connect: Callable[[], RedisCluster]) -> RedisCluster:
    """A cluster client: it asks a node for the cluster's layout as it is built, so that is
    where an unreachable cluster shows (redis-py's message names the nodes, never a
    password)."""
    try:
        return connect()
    except (RedisError, RedisClusterException) as exc:
        raise BackendUnavailableError(f"cannot reach the Redis Cluster: {exc}") from exc


def close_refresh_client(client: Client) -> None:
    client.close()  # a cluster client disconnects every node's pool here
    if isinstance(client, RedisCluster):
        return
    pool = client.connection_pool
    pool.disconnect()
    if isinstance(pool, SentinelConnectionPool):  # its sentinels are ours too
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


def servers_of(client: Client) -> list[redis.Redis]:
    """A client of each server that holds the group's keys: the masters of a cluster."""
    if isinstance(client, RedisCluster):
        primaries = client.get_primaries()  # type: ignore[no-untyped-call]
        return [client.get_redis_connection(node) for node in primaries]
    return [client]


def bounded_sentinel(manager: Sentinel) -> Sentinel:
    """The sentinels of ``manager`` again, asked with the refresher's bounded timeouts; each
    is asked once in turn, so none is retried."""
    addresses = [(sentinel.connection_pool.connection_kwargs["host"],
                  sentinel.connection_pool.connection_kwargs["port"])
                 for sentinel in manager.sentinels]
    sentinel_kwargs = dict(manager.sentinel_kwargs, socket_timeout=REFRESH_TIMEOUT,
                           socket_connect_timeout=REFRESH_TIMEOUT, retry=Retry(NoBackoff(), 0))
    sentinel_kwargs.pop("retry_on_timeout", None)
    return Sentinel(  # type: ignore[no-untyped-call]
        addresses, min_other_sentinels=manager.min_other_sentinels,
        sentinel_kwargs=sentinel_kwargs, force_master_ip=getattr(manager, "_force_master_ip", None))
