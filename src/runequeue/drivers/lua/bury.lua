#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full (maxmemory, noeviction), so a full Redis stops dispatch,
-- not work: jobs are still taken, renewed, finished and failed, which frees the memory.
-- bury: move a reserved job that failed for good into the failed outbox, store the jobs that
-- follow its failure (a chain's catch job) on the same queue, and move its batch's counters
-- (storing the batch's callbacks then due), in one atomic step.
-- KEYS[1] = reserved zset, KEYS[2] = token hash, KEYS[3] = dead zset, KEYS[4] = errors hash,
-- KEYS[5] = payload hash, KEYS[6] = tries hash, KEYS[7] = ready list, KEYS[8] = notify list; for
-- a job of a batch, KEYS[9] = the batch hash, KEYS[10] = its failed set
-- ARGV[1] = id, ARGV[2] = lease token, ARGV[3] = error text, then groups of three: id, payload,
-- max_tries ('' = default)
-- Returns 1; 2 when the job's batch no longer exists; or 0 when the caller no longer holds the
-- lease. The payload stays until the worker has recorded the failure and purges it: record, then
-- delete (never the other way round).
-- store_followers, settle_batch: followers.lua and batch.lua, given ahead of this script.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
store_followers(KEYS[5], KEYS[6], KEYS[7], KEYS[8], 4)
if KEYS[9] and settle_batch(KEYS[9], KEYS[10], ARGV[1], false, KEYS[5], KEYS[6], KEYS[7], KEYS[8]) == 0 then
  return 2
end
return 1
