-- followers: functions that ack_then.lua, bury.lua and batch_failed.lua are given ahead of their
-- own code (see redis_keys.with_helpers): store the jobs that follow a settled one, ready on its
-- queue. A follower whose id is still stored is skipped: each id is fixed at dispatch (a chain's
-- steps, a batch's callbacks), so storing one twice stores it once.
local function store_job(payload, tries, ready, notify, id, raw, max_tries)
  if redis.call('HSETNX', payload, id, raw) == 1 then
    if max_tries ~= '' then
      redis.call('HSET', tries, id, max_tries)
    end
    redis.call('RPUSH', ready, id)
    if redis.call('LLEN', notify) < 64 then
      redis.call('RPUSH', notify, 1)
    end
  end
end

-- ARGV from ``first`` on = groups of three: id, payload, max_tries ('' = default).
local function store_followers(payload, tries, ready, notify, first)
  for i = first, #ARGV, 3 do
    store_job(payload, tries, ready, notify, ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
end
