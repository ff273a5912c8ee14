-- batch_add: push.lua (which follows this prelude in the same script) for jobs added to an
-- existing batch, whose counters grow by as many as are new in the same step (an add repeated
-- after an ambiguous network error stores nothing twice, and counts nothing twice).
-- KEYS[1..5] = push.lua's, KEYS[6] = the batch hash (on the jobs' queue, so one Cluster slot)
-- ARGV = push.lua's groups of four
-- Returns -1 (nothing stored) when the batch does not exist, else what push.lua returns.
if redis.call('EXISTS', KEYS[6]) == 0 then
  return -1
end
local new = 0
for i = 1, #ARGV, 4 do
  if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then
    new = new + 1
  end
end
redis.call('HINCRBY', KEYS[6], 'total', new)
redis.call('HINCRBY', KEYS[6], 'pending', new)
