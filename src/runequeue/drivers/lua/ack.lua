#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full (maxmemory, noeviction), so a full Redis stops dispatch,
-- not work: jobs are still taken, renewed, finished and failed, which frees the memory.
-- ack: delete finished jobs whose lease the caller still holds.
-- KEYS[1] = reserved zset, KEYS[2] = payload hash, KEYS[3] = attempts hash, KEYS[4] = tries hash,
-- KEYS[5] = token hash
-- ARGV = pairs: id, lease token
-- Returns one 1 (deleted) or 0 (lease lost: the job belongs to another worker now) per pair.
-- Every command takes a whole batch (in slices: Lua's unpack has a stack limit), because a call
-- from Lua costs a few microseconds of Redis's single thread whatever it carries.
local SLICE = 1000
local ids, tokens = {}, {}
for i = 1, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
end

local result, owned = {}, {}
for first = 1, #ids, SLICE do
  local last = math.min(first + SLICE - 1, #ids)
  local held = redis.call('HMGET', KEYS[5], unpack(ids, first, last))
  for i = first, last do
    if held[i - first + 1] == tokens[i] then
      result[i] = 1
      owned[#owned + 1] = ids[i]
    else
      result[i] = 0
    end
  end
end

for first = 1, #owned, SLICE do
  local last = math.min(first + SLICE - 1, #owned)
  redis.call('ZREM', KEYS[1], unpack(owned, first, last))
  for k = 2, 5 do
    redis.call('HDEL', KEYS[k], unpack(owned, first, last))
  end
end
return result
