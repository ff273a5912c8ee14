"""`Limits` on Redis: one key per counter or lock, under ``<prefix>:limits:``. Each is a single
key, so each call is atomic on its own (and any Cluster slot will do)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from runequeue.drivers.base import Limits
from runequeue.drivers.redis_connect import AsyncClient
from runequeue.drivers.redis_keys import as_text, lua_source

# INCR, with the window's expiry set by the hit that opens it; answers {hits, ms to reset}.
_HIT = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {hits, redis.call('PTTL', KEYS[1])}
"""


class RedisLimits:
    """`Limits` on the worker's asyncio client."""

    def __init__(
        self,
        client: AsyncClient,
        prefix: str,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.client = client
        self._prefix = f"{prefix}:limits:"
        self._errors = errors
        self._hit = client.register_script(_HIT)
        self._unlock = client.register_script(lua_source("unlock"))  # delete if still the owner's

    async def hit(self, key: str, window_s: float) -> tuple[int, float]:
        with self._errors():
            hits, ttl_ms = await self._hit(keys=[self._prefix + key],
                                           args=[max(int(window_s * 1000), 1)])  # fmt: skip
        return int(hits), max(int(ttl_ms), 0) / 1000

    async def hits(self, key: str) -> tuple[int, float]:
        with self._errors():
            async with self.client.pipeline(transaction=False) as pipe:  # two reads of one key
                pipe.get(self._prefix + key)
                pipe.pttl(self._prefix + key)
                hits, ttl_ms = await pipe.execute()
        if hits is None or int(ttl_ms) <= 0:
            return 0, 0.0
        return int(hits), int(ttl_ms) / 1000

    async def clear(self, key: str) -> None:
        with self._errors():
            await self.client.delete(self._prefix + key)

    async def lock(self, key: str, owner: str, ttl_s: float) -> bool:
        name = self._prefix + key
        with self._errors():
            if await self.client.set(name, owner, nx=True, px=max(int(ttl_s * 1000), 1)):
                return True
            held = await self.client.get(name)
        return held is not None and as_text(held) == owner

    async def unlock(self, key: str, owner: str) -> None:
        with self._errors():
            await self._unlock(keys=[self._prefix + key], args=[owner])


_check: type[Limits] = RedisLimits
