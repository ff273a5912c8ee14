#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full (maxmemory, noeviction), so a full Redis stops dispatch,
-- not work: jobs are still taken, renewed, finished and failed, which frees the memory.
-- clear: delete every ready, recovered, delayed and reserved job of one queue (the failed outbox
-- is kept).
-- KEYS[1] = ready list, KEYS[2] = delayed zset, KEYS[3] = reserved zset, KEYS[4] = payload hash,
-- KEYS[5] = attempts hash, KEYS[6] = tries hash, KEYS[7] = token hash, KEYS[8] = notify list,
-- KEYS[9] = recovered list
-- Returns the number of jobs deleted.
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(redis.call('LRANGE', KEYS[9], 0, -1)) do ids[#ids + 1] = id end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do ids[#ids + 1] = id end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do ids[#ids + 1] = id end
for i = 1, #ids, 1000 do
  local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
  for k = 4, 7 do
    redis.call('HDEL', KEYS[k], unpack(chunk))
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[8], KEYS[9])
return #ids
