#!lua flags=allow-oom
-- claim_hook: claim the failed() hook of a job in the failed outbox, once across all workers.
-- KEYS[1] = dead zset (failed outbox), KEYS[2] = token hash
-- ARGV[1] = job id, ARGV[2] = the claim's mark (written where the lease token was)
-- Returns 1 for the one caller that claims it, else 0 (claimed before, or not in the outbox).
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
