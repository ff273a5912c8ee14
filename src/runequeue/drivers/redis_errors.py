"""redis-py's exceptions as runequeue's, with messages a user can act on.

Two refusals get words of their own, because what to do about them is not obvious from Redis's
text: "out of memory" (``maxmemory`` reached with a ``noeviction`` policy: Redis takes no new
data, while scripts flagged ``allow-oom`` still finish and release jobs) and "read only" (the
server was demoted to a replica by a failover). A read-only server is reported as unavailable, so
the worker backs off and reconnects instead of running jobs it could not acknowledge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import redis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from runequeue.errors import BackendFull, DriverError, DriverUnavailable
from runequeue.urls import hide_password

# redis-py prefixes an error inside a pipeline with the command, cut to a hundred characters
# ("Command # 2 (EVALSHA e9b1... r25:{default}...) of pipeline caused error: "): noise that hides
# the server's own words, so it is taken off.
_PIPELINE_PREFIX = "Command # "
_PIPELINE_MARK = " of pipeline caused error: "
# What Redis says to a client blocked in BLPOP when a failover turns the server into a replica.
_UNBLOCKED_BY_DEMOTION = "UNBLOCKED force unblock from blocking operation, instance state changed"


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return hide_password(url)


def cluster_node_advice(url: str) -> str:
    """What to say when a plain URL turns out to lead to one node of a Redis Cluster."""
    rest = redacted(url).partition("://")[2]
    return (
        f"Redis at {redacted(url)} is a node of a Redis Cluster, which holds only some of the "
        f"queues: use REDIS_URL=redis+cluster://{rest.split('/')[0]} (any node; more "
        "comma-separated)"
    )


def server_words(exc: redis.RedisError) -> str:
    """What Redis said, whole, without redis-py's cut-down copy of the command in front."""
    text = str(exc)
    if text.startswith(_PIPELINE_PREFIX) and _PIPELINE_MARK in text:
        return text.split(_PIPELINE_MARK, 1)[1]
    return text


@contextlib.contextmanager
def mapped_errors(url: str, on_read_only: Callable[[], None] | None = None) -> Iterator[None]:
    """Turn redis-py exceptions into runequeue's, so callers never import redis.

    ``on_read_only`` is called when the server turned out to be a replica: its connections should
    be dropped, so the next call connects afresh, to wherever the URL leads now (a DNS name or a
    proxy that follows the failover, as managed Redis endpoints do).
    """
    try:
        yield
    except _TOPOLOGY_ERRORS as exc:
        raise _topology_error(url, exc) from exc
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise DriverUnavailable(f"Redis at {redacted(url)} is unreachable: {exc}") from exc
    except redis.exceptions.OutOfMemoryError as exc:
        raise BackendFull(
            f"Redis at {redacted(url)} is out of memory ({server_words(exc).rstrip('.')}): it "
            "takes no new jobs until memory is freed or maxmemory is raised"
        ) from exc
    except redis.exceptions.ReadOnlyError as exc:
        raise _demoted(url, exc, on_read_only) from exc
    except redis.RedisError as exc:
        if server_words(exc).startswith(_UNBLOCKED_BY_DEMOTION):  # BLPOP cut short by a failover
            raise _demoted(url, exc, on_read_only) from exc
        raise DriverError(f"Redis at {redacted(url)} failed: {server_words(exc)}") from exc


# What the Sentinel and Cluster clients raise of their own.
_TOPOLOGY_ERRORS = (
    redis.sentinel.MasterNotFoundError,
    aiosentinel.MasterNotFoundError,
    redis.exceptions.MovedError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
)


def _topology_error(url: str, exc: Exception) -> DriverError:
    if isinstance(exc, redis.sentinel.MasterNotFoundError | aiosentinel.MasterNotFoundError):
        return DriverUnavailable(
            f"the Sentinels of {redacted(url)} know no master by that name ({exc}): check the "
            "name in REDIS_URL (redis+sentinel://host:26379/<master-name>/0), or wait for a "
            "failover to end"
        )
    if isinstance(exc, redis.exceptions.MovedError):
        if "+cluster://" in url:  # the Cluster's slots moved while this was in flight
            return DriverUnavailable(f"Redis Cluster at {redacted(url)} moved a slot ({exc})")
        return DriverError(f"{cluster_node_advice(url)} (MOVED {exc})")
    if isinstance(exc, redis.exceptions.ClusterDownError):
        return DriverUnavailable(
            f"Redis Cluster at {redacted(url)} is down ({exc}): a slot has no master, as during "
            "a failover"
        )
    if "Cluster mode is not enabled" in str(exc):
        return DriverError(not_a_cluster(url, exc))
    if type(exc).__name__ == "CrossSlotTransactionError":  # a bug of ours (redis-py 6 and later)
        return DriverError(f"Redis Cluster at {redacted(url)} refused: {exc}")
    # No node reachable, or a slot with no master for now (a failover): try again later.
    return DriverUnavailable(f"Redis Cluster at {redacted(url)} is unreachable: {exc}")


def not_a_cluster(url: str, exc: Exception) -> str:
    first = redacted(url).partition("://")[2].split(",")[0].split("/")[0]
    return (
        f"Redis at {redacted(url)} is not a Redis Cluster ({str(exc).split(': ')[-1]}): use "
        f"REDIS_URL=redis://{first}/0 for a single server"
    )


def _demoted(
    url: str, exc: redis.RedisError, on_read_only: Callable[[], None] | None
) -> DriverUnavailable:
    if on_read_only is not None:
        on_read_only()
    return DriverUnavailable(
        f"Redis at {redacted(url)} is a read-only replica now ({server_words(exc)}): a "
        "failover demoted it; reconnecting until the URL leads to a master"
    )
