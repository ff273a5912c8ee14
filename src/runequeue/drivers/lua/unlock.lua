#!lua flags=allow-oom
-- allow-oom: it frees memory.
-- unlock: free a unique job's lock, if that job still holds it (a lock that expired and was
-- taken by another job is not this job's to free).
-- KEYS[1] = the lock key
-- ARGV[1] = the job id
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
