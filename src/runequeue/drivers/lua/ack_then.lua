#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full, as ack does (it deletes a job for each one it stores).
-- ack_then: delete one finished job whose lease the caller holds, and store the jobs that follow
-- it (a chain's next step) on the same queue, in one atomic step.
-- KEYS[1] = reserved zset, KEYS[2] = payload hash, KEYS[3] = attempts hash, KEYS[4] = tries hash,
-- KEYS[5] = token hash, KEYS[6] = ready list, KEYS[7] = notify list
-- ARGV[1] = id, ARGV[2] = lease token, then groups of three: id, payload, max_tries ('' = default)
-- Returns 1, or 0 (and nothing changed) when the caller no longer holds the lease.
-- store_followers: followers.lua, given ahead of this script.
if redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
for k = 2, 5 do
  redis.call('HDEL', KEYS[k], ARGV[1])
end
store_followers(KEYS[2], KEYS[4], KEYS[6], KEYS[7], 3)
return 1
