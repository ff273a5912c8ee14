#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full (maxmemory, noeviction), so a full Redis stops dispatch,
-- not work: jobs are still taken, renewed, finished and failed, which frees the memory.
-- bury: move a reserved job that failed for good into the failed outbox.
-- KEYS[1] = reserved zset, KEYS[2] = token hash, KEYS[3] = dead zset, KEYS[4] = errors hash
-- ARGV[1] = id, ARGV[2] = lease token, ARGV[3] = error text
-- Returns 1, or 0 when the caller no longer holds the lease. The payload stays until the worker
-- has recorded the failure and purges it: record, then delete (never the other way round).
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
return 1
