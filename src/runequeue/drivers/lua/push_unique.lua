-- push_unique: push.lua (which follows this prelude in the same script) for one job, under the
-- job's unique lock.
-- KEYS[1..5] = push.lua's, KEYS[6] = the lock key (on the job's queue, so one Cluster slot)
-- ARGV = push.lua's four for one job, then the lock's time to live in ms
-- Returns the id of the job holding the lock (nothing stored) or, once the lock is taken, what
-- push.lua returns.
local ttl = table.remove(ARGV)
local holder = redis.call('GET', KEYS[6])
if holder then
  return holder
end
redis.call('SET', KEYS[6], ARGV[1], 'PX', ttl)
