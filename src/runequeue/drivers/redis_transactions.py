"""Pipelines with script calls in them (MULTI/EXEC or not), on one server or on a Redis Cluster.

On one server redis-py loads a pipeline's scripts (SCRIPT EXISTS, then SCRIPT LOAD) before
sending it. On a Cluster:

- a transaction (all its keys in one slot) is sent to the master of that slot through redis-py's
  client of that node, a plain pipeline that loads its scripts the same way (redis-py's Cluster
  pipeline has no transactions before 6, and loads no scripts in any version); a MOVED reply (the
  slot moved, or a failover) refreshes the slot map and sends it once more;
- a plain pipeline goes through the Cluster pipeline, which splits it by node; its scripts are
  loaded on every master before the first one that calls them, and again after a NOSCRIPT (a
  failover promoted a replica, and Redis does not replicate SCRIPT LOAD), when it is sent again.

Everything sent this way may run twice: pushes skip a job id already stored, a lease is extended
to the same deadline, and the other commands write the same values.
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

    def run(
        self, scripts: Sequence[Script], fill: Fill, *, atomic: bool = True, slot_of: str = ""
    ) -> list[Any]:
        """``fill``'s commands, in one MULTI/EXEC (or a plain pipeline: not ``atomic``); the
        replies, one per command. On a Cluster a transaction's keys are in the slot of the key
        ``slot_of``."""
        client = self.client
        if not isinstance(client, redis.cluster.RedisCluster):
            return self._execute(fill, atomic)
        if atomic:
            try:
                return self._on_node(client, slot_of, fill)
            except redis.exceptions.MovedError:
                client.nodes_manager.initialize()
                return self._on_node(client, slot_of, fill)
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

    @staticmethod
    def _on_node(client: redis.cluster.RedisCluster, key: str, fill: Fill) -> list[Any]:
        node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        if node is None or node.redis_connection is None:
            raise redis.exceptions.ConnectionError(f"no master holds the slot of {key} now")
        with node.redis_connection.pipeline(transaction=True) as pipe:
            fill(pipe)
            return list(pipe.execute())

    def _load(self, scripts: Sequence[Script]) -> None:
        for script in scripts:
            self.client.script_load(script.script)  # on every master (redis-py's routing)
            self._loaded.add(script.sha)
