-- ack: delete finished jobs whose lease the caller still holds.
-- KEYS[1] = reserved zset, KEYS[2] = payload hash, KEYS[3] = attempts hash, KEYS[4] = tries hash,
-- KEYS[5] = token hash
-- ARGV = pairs: id, lease token
-- Returns one 1 (deleted) or 0 (lease lost: the job belongs to another worker now) per pair.
local result = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[5], id) == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
end
return result
