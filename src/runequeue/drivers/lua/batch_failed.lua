#!lua flags=allow-oom
-- batch_failed: record in its batch the failure of a job the backend failed (its last worker
-- died: reserve.lua buried it, with no batch at hand). Idempotent: a failure recorded already
-- changes nothing, so every sweep may call it until the job is purged.
-- KEYS[1] = the batch hash, KEYS[2] = its failed set, KEYS[3] = payload hash, KEYS[4] = tries
-- hash, KEYS[5] = ready list, KEYS[6] = notify list
-- ARGV[1] = the failed job's id
-- Returns 1, or 0 when the batch does not exist.
-- settle_batch: followers.lua and batch.lua, given ahead of this script.
return settle_batch(KEYS[1], KEYS[2], ARGV[1], false, KEYS[3], KEYS[4], KEYS[5], KEYS[6])
