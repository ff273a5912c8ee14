"""Where a ``REDIS_URL`` leads, and the redis-py clients that get there.

Three forms, one for each way Redis is run:

    redis://[user:password@]host:6379/0            one server (rediss:// for TLS, unix:// too)
    redis+cluster://[user:password@]h1:7000,h2:7000 a Redis Cluster: any nodes, as seeds
    redis+sentinel://[user:password@]s1:26379,s2:26379/mymaster/0
                                                   the master that these Sentinels name

``rediss+cluster://`` and ``rediss+sentinel://`` use TLS. Query options (``ssl_ca_certs``,
``ssl_cert_reqs``, ``socket_timeout``...) are redis-py's own, as for a plain URL; with Sentinel,
the credentials and TLS options are the master's, and ``sentinel_password`` (and
``sentinel_username``) in the query are the Sentinels' when they ask for their own.

On a Cluster, redis-py's `RedisCluster` routes each command to the master of its key's slot and
follows MOVED replies and failovers. Every script of the driver names keys of one queue only,
which share the hash tag ``{queue}`` (`redis_keys`), so a script never spans two slots.
Through Sentinel, every new connection asks the Sentinels for the master first, so a client
follows a failover as soon as it reconnects, and never writes to a master Sentinel has replaced.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.sentinel

from runequeue.errors import ConfigError
from runequeue.urls import hide_password

Topology = Literal["server", "cluster", "sentinel"]
SCHEMES = ("redis", "rediss", "unix")
TOPOLOGIES: tuple[Topology, ...] = ("server", "cluster", "sentinel")
# Query options that configure the Sentinels, not the master.
_SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = aioredis.Redis | aiocluster.RedisCluster

_USAGE = (
    "it must be redis://host:6379/0 (rediss:// for TLS, or unix://), "
    "redis+cluster://host:7000[,host2:7000] for a Redis Cluster, or "
    "redis+sentinel://host:26379[,host2:26379]/master-name/0 for Sentinel"
)


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """A parsed ``REDIS_URL``."""

    url: str
    topology: Topology
    # One server: redis-py's own URL. Cluster seeds and Sentinels: (host, port) pairs.
    nodes: tuple[tuple[str, int], ...]
    service: str  # Sentinel: the master's name
    options: dict[str, Any]  # redis-py connection options: credentials, db, TLS, query options
    sentinel_options: dict[str, Any]

    @property
    def cluster(self) -> bool:
        return self.topology == "cluster"

    def __str__(self) -> str:
        return hide_password(self.url)


def parse(url: str) -> RedisTarget:
    """``url`` as a `RedisTarget`; a `ConfigError` that says what is wrong with it otherwise."""
    scheme, sep, rest = url.partition("://")
    base, plus, topology_name = scheme.lower().partition("+")
    topology = "server" if not plus else topology_name
    if not sep or base not in SCHEMES or topology not in TOPOLOGIES:
        raise ConfigError(f"invalid REDIS_URL {hide_password(url)!r}: {_USAGE}")
    if topology == "server":
        return RedisTarget(url, "server", (), "", {}, {})
    if base == "unix":
        raise ConfigError(
            f"invalid REDIS_URL {hide_password(url)!r}: a {topology} is reached over TCP "
            f"(redis+{topology}:// or rediss+{topology}://), not a unix socket"
        )
    userinfo, at, after = rest.rpartition("@")
    location, _, query = after.partition("?")
    hosts, _, path = location.partition("/")
    nodes = tuple(_host_port(url, text) for text in hosts.split(","))
    service, db = _service_and_db(url, topology, [p for p in path.split("/") if p])
    pairs = parse_qsl(query)
    own = urlencode([(k, v) for k, v in pairs if k not in _SENTINEL_OPTIONS])
    host, port = nodes[0]
    single = f"{base}://{userinfo}{at}{host}:{port}/{db}" + (f"?{own}" if own else "")
    options = _connection_options(url, single)
    if topology == "cluster":
        options.pop("db", None)
    sentinels = {k.removeprefix("sentinel_"): v for k, v in pairs if k in _SENTINEL_OPTIONS}
    return RedisTarget(url, cast(Topology, topology), nodes, service, options, sentinels)


def _service_and_db(url: str, topology: str, parts: list[str]) -> tuple[str, str]:
    """The Sentinel master's name and the database number, from the URL's path."""
    if topology == "cluster":
        if parts not in ([], ["0"]):
            raise ConfigError(
                f"invalid REDIS_URL {hide_password(url)!r}: a Redis Cluster has database 0 only"
            )
        return "", "0"
    if not parts or len(parts) > 2:
        raise ConfigError(
            f"invalid REDIS_URL {hide_password(url)!r}: name the master after the "
            "Sentinels, e.g. redis+sentinel://127.0.0.1:26379/mymaster/0"
        )
    return parts[0], parts[1] if len(parts) == 2 else "0"


def _connection_options(url: str, single: str) -> dict[str, Any]:
    """redis-py's connection options for ``single`` (one of the URL's hosts), without the host:
    the credentials, database, TLS (as ``ssl=True``, which the Cluster and Sentinel clients take)
    and the query's options."""
    try:
        parsed = redis.connection.parse_url(single)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"invalid REDIS_URL {hide_password(url)!r}: {exc}") from None
    options = cast(dict[str, Any], parsed)
    for key in ("host", "port"):
        options.pop(key, None)
    if single.startswith("rediss://"):
        options.pop("connection_class", None)
        options["ssl"] = True
    return options


def _host_port(url: str, text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = text.strip(), ""
    host = host.strip("[]")
    try:
        number = int(port) if port else 0
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise ConfigError(
            f"invalid REDIS_URL {hide_password(url)!r}: {text!r} is not host:port "
            "(every Cluster node and Sentinel needs its port)"
        )
    return host, number


def sync_client(target: RedisTarget, **kwargs: Any) -> SyncClient:
    """A blocking client for ``target``; ``kwargs`` are redis-py's (timeouts, retry)."""
    if target.topology == "server":
        return redis.Redis.from_url(target.url, **kwargs)
    if target.topology == "cluster":
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in target.nodes]  # type: ignore[no-untyped-call]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **target.options, **kwargs)
    sentinel = redis.sentinel.Sentinel(
        list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target, kwargs),
        **target.options, **kwargs,
    )  # fmt: skip
    return cast(redis.Redis, sentinel.master_for(target.service))


def async_client(target: RedisTarget, **kwargs: Any) -> AsyncClient:
    """An asyncio client for ``target``; ``kwargs`` are redis-py's (timeouts, retry)."""
    if target.topology == "server":
        return aioredis.Redis.from_url(target.url, **kwargs)
    if target.topology == "cluster":
        nodes = [aiocluster.ClusterNode(host, port) for host, port in target.nodes]
        return aiocluster.RedisCluster(startup_nodes=nodes, **target.options, **kwargs)
    return cast(aioredis.Redis, _async_sentinel(target, kwargs).master_for(target.service))


def async_single_connection(
    target: RedisTarget, node: tuple[str, int] | None = None, **kwargs: Any
) -> aioredis.Redis:
    """An asyncio client of one connection, for a blocking call (BLPOP) and what is pipelined
    behind it: to the server, to the master the Sentinels name, or, on a Cluster, to ``node``
    (the master of the slot the caller's keys are in)."""
    if target.topology == "server":
        return aioredis.Redis.from_url(target.url, single_connection_client=True, **kwargs)
    if target.topology == "cluster":
        if node is None:
            raise ValueError("a Cluster connection is to one node: name it")
        host, port = node
        options = {k: v for k, v in target.options.items() if k != "ssl"}
        if target.options.get("ssl"):
            options["connection_class"] = aioredis.SSLConnection
        pool = aioredis.ConnectionPool(host=host, port=port, **options, **kwargs)
        return _owning(pool)
    sentinel = _async_sentinel(target, kwargs)
    pool = aiosentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
        target.service, sentinel, **{**sentinel.connection_kwargs, "is_master": True}
    )
    return _owning(pool)


def _owning(pool: aioredis.ConnectionPool) -> aioredis.Redis:
    """A client of one connection from ``pool``, which closes the pool when it is closed."""
    client = aioredis.Redis(connection_pool=pool, single_connection_client=True)
    client.auto_close_connection_pool = True
    return client


async def aclose(client: AsyncClient) -> None:
    """Close ``client``, and, through Sentinel, the connections it asked the Sentinels on (its
    own clients of theirs, which closing the master's pool leaves open)."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, aiosentinel.SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def _async_sentinel(target: RedisTarget, kwargs: dict[str, Any]) -> aiosentinel.Sentinel:
    return aiosentinel.Sentinel(
        list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target, kwargs),
        **target.options, **kwargs,
    )  # fmt: skip


def _sentinel_kwargs(target: RedisTarget, kwargs: dict[str, Any]) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: the same timeouts and TLS as the master, their
    own credentials if the URL gave any."""
    shared = {k: v for k, v in target.options.items() if k.startswith("ssl")}
    timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    return {**shared, **timeouts, **target.sentinel_options}
