-- batch_add: push.lua (which follows this prelude in the same script) for jobs added to an
-- existing batch, whose counters grow by as many in the same step.
-- KEYS[1..5] = push.lua's, KEYS[6] = the batch hash (on the jobs' queue, so one Cluster slot)
-- ARGV = push.lua's groups of four
-- Returns -1 (nothing stored) when the batch does not exist, else what push.lua returns.
if redis.call('EXISTS', KEYS[6]) == 0 then
  return -1
end
redis.call('HINCRBY', KEYS[6], 'total', #ARGV / 4)
redis.call('HINCRBY', KEYS[6], 'pending', #ARGV / 4)
