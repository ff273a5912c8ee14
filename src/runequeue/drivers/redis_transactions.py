"""Pipelines with script calls in them (MULTI/EXEC or not), on one server or on a Redis Cluster.

On one server redis-py loads a pipeline's scripts (SCRIPT EXISTS, then SCRIPT LOAD) before
sending it. Its Cluster pipeline does not: a script the node has never seen fails with NOSCRIPT,
inside a transaction after the commands queued before it ran. So on a Cluster the scripts are
loaded on every master before the first pipeline that calls them, and after a NOSCRIPT (a
failover promoted a replica, and Redis does not replicate SCRIPT LOAD) they are loaded again and
the pipeline is sent again. Everything sent this way may run twice: pushes skip a job id already
stored, a lease is extended to the same deadline, and the other commands write the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.cluster
from redis.commands.core import Script

from runequeue.drivers.redis_connect import SyncClient

Fill = Callable[[Any], None]  # queues the transaction's commands on the pipeline it is given


class Transactions:
    """Pipelines of script calls on one blocking client (`RedisProducer`'s, `RedisBatches`',
    `RedisLeaseKeeper`'s)."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client
        self._loaded: set[str] = set()  # scripts known to be on every master (a Cluster)

    def run(self, scripts: Sequence[Script], fill: Fill, *, atomic: bool = True) -> list[Any]:
        """``fill``'s commands, in one MULTI/EXEC (or a plain pipeline: not ``atomic``); the
        replies, one per command."""
        if not isinstance(self.client, redis.cluster.RedisCluster):
            return self._execute(fill, atomic)
        self._load([script for script in scripts if script.sha not in self._loaded])
        try:
            return self._execute(fill, atomic)
        except redis.exceptions.NoScriptError:
            self._load(scripts)
            return self._execute(fill, atomic)

    def _execute(self, fill: Fill, atomic: bool) -> list[Any]:
        with self.client.pipeline(transaction=atomic) as pipe:
            fill(pipe)
            return list(pipe.execute())

    def _load(self, scripts: Sequence[Script]) -> None:
        for script in scripts:
            self.client.script_load(script.script)  # on every master (redis-py's routing)
            self._loaded.add(script.sha)
