"""`Control` on Redis: a key per value under ``<prefix>:control:<namespace>:``, expiring by
itself, and a sorted set per namespace indexing its names by expiry (ms; +inf for none), so
reading a namespace never scans the keyspace.

On a Cluster the namespace is a hash tag (``<prefix>:control:{<namespace>}``), so an index and
its values share a slot and each script stays on one node. A single server keeps the untagged
names it always had: its pause signals and worker records survive an upgrade."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from runequeue.drivers.base import Control
from runequeue.drivers.redis_connect import AsyncClient
from runequeue.drivers.redis_keys import as_text

# KEYS[1] = the index, KEYS[2] = the value's key; ARGV = name, value, ttl ms ('' = none).
# An index holding only expiring values expires with the last of them, so a namespace no one
# reads again (an old hour's metrics) leaves nothing behind.
_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '' then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[1], '+inf', ARGV[1])
  redis.call('PERSIST', KEYS[1])
else
  local ttl = tonumber(ARGV[3])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  elseif left == -1 and redis.call('ZCOUNT', KEYS[1], '+inf', '+inf') == 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return 1
"""

# KEYS[1] = the index; ARGV[1] = the values' key prefix. Returns name, value, name, value, ...
_GET_ALL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local names = redis.call('ZRANGE', KEYS[1], 0, -1)
local found = {}
for _, name in ipairs(names) do
  local value = redis.call('GET', ARGV[1] .. name)
  if value then
    found[#found + 1] = name
    found[#found + 1] = value
  end
end
return found
"""


class RedisControl:
    """`Control` on the worker's (or a command's) asyncio client."""

    def __init__(
        self,
        client: AsyncClient,
        prefix: str,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
        *,
        cluster: bool = False,
    ) -> None:
        self.client = client
        self._prefix = f"{prefix}:control:"
        self._cluster = cluster
        self._errors = errors
        self._put = client.register_script(_PUT)
        self._get_all = client.register_script(_GET_ALL)

    def _index(self, namespace: str) -> str:
        return f"{self._prefix}{{{namespace}}}" if self._cluster else self._prefix + namespace

    async def put(self, namespace: str, name: str, value: str, ttl_s: float | None = None) -> None:
        ttl = "" if ttl_s is None else max(int(ttl_s * 1000), 1)
        index = self._index(namespace)
        with self._errors():
            await self._put(keys=[index, f"{index}:{name}"], args=[name, value, ttl])

    async def get_all(self, namespace: str) -> dict[str, str]:
        index = self._index(namespace)
        with self._errors():
            reply = await self._get_all(keys=[index], args=[f"{index}:"])
        return {as_text(reply[i]): as_text(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def delete(self, namespace: str, name: str) -> None:
        index = self._index(namespace)
        with self._errors():
            # Not a transaction on a Cluster (redis-py's asyncio Cluster client has none before
            # 6): a name whose value is gone is skipped by `get_all`.
            async with self.client.pipeline(transaction=not self._cluster) as pipe:
                pipe.delete(f"{index}:{name}")
                pipe.zrem(index, name)
                await pipe.execute()

    async def purge_expired(self) -> None:
        return None  # values expire by themselves, and so does an index of expiring values


_check: type[Control] = RedisControl
