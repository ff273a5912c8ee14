#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full (maxmemory, noeviction), so a full Redis stops dispatch,
-- not work: jobs are still taken, renewed, finished and failed, which frees the memory.
-- extend: renew leases still held by the caller.
-- KEYS[1] = reserved zset, KEYS[2] = token hash
-- ARGV[1] = lease ms, then pairs: id, lease token
-- Returns one 1 (renewed) or 0 (lost) per pair.
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local result = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
end
return result
