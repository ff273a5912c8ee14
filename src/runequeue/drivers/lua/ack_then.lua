#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full, as ack does (it deletes a job for each one it stores).
-- ack_then: delete one finished job whose lease the caller holds, and store the jobs that follow
-- it (a chain's next step) on the same queue, and move its batch's counters (storing the batch's
-- callbacks then due), in one atomic step.
-- KEYS[1] = reserved zset, KEYS[2] = payload hash, KEYS[3] = attempts hash, KEYS[4] = tries hash,
-- KEYS[5] = token hash, KEYS[6] = ready list, KEYS[7] = notify list; for a job of a batch,
-- KEYS[8] = the batch hash, KEYS[9] = its failed set
-- ARGV[1] = id, ARGV[2] = lease token, then groups of three: id, payload, max_tries ('' = default)
-- Returns 1; 2 when the job's batch no longer exists (the job is acked all the same); or 0 (and
-- nothing changed) when the caller no longer holds the lease.
-- store_followers, settle_batch: followers.lua and batch.lua, given ahead of this script.
if redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
for k = 2, 5 do
  redis.call('HDEL', KEYS[k], ARGV[1])
end
store_followers(KEYS[2], KEYS[4], KEYS[6], KEYS[7], 3)
if KEYS[8] and settle_batch(KEYS[8], KEYS[9], ARGV[1], true, KEYS[2], KEYS[4], KEYS[6], KEYS[7]) == 0 then
  return 2
end
return 1
