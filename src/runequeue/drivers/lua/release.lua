#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full (maxmemory, noeviction), so a full Redis stops dispatch,
-- not work: jobs are still taken, renewed, finished and failed, which frees the memory.
-- release: put a reserved job back (a retry after backoff, or a graceful shutdown).
-- KEYS[1] = ready list, KEYS[2] = delayed zset, KEYS[3] = reserved zset, KEYS[4] = attempts hash,
-- KEYS[5] = token hash, KEYS[6] = notify list
-- ARGV[1] = id, ARGV[2] = lease token, ARGV[3] = delay ms, ARGV[4] = 1 to refund the attempt
-- Returns 1, or 0 when the caller no longer holds the lease.
if redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
local refund = ARGV[4] == '1'
if refund then
  redis.call('HINCRBY', KEYS[4], ARGV[1], -1)
end
local delay = tonumber(ARGV[3])
if delay > 0 then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + delay, ARGV[1])
else
  if refund then
    redis.call('LPUSH', KEYS[1], ARGV[1]) -- interrupted by a shutdown: run it next
  else
    redis.call('RPUSH', KEYS[1], ARGV[1])
  end
end
-- Wake an idle worker: to run the job now, or (delayed) to learn when it is due, since the
-- workers' idle waits were bounded before this job was delayed.
if redis.call('LLEN', KEYS[6]) < 64 then
  redis.call('RPUSH', KEYS[6], 1)
end
return 1
