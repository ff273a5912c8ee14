-- followers: a function that ack_then.lua and bury.lua are given ahead of their own code (see
-- redis_keys.with_followers): store the jobs that follow a settled one, ready on its queue.
-- ARGV from ``first`` on = groups of three: id, payload, max_tries ('' = default). A follower
-- whose id is still stored is skipped: each step's id is fixed when its chain is dispatched.
local function store_followers(payload, tries, ready, notify, first)
  for i = first, #ARGV, 3 do
    if redis.call('HSETNX', payload, ARGV[i], ARGV[i + 1]) == 1 then
      if ARGV[i + 2] ~= '' then
        redis.call('HSET', tries, ARGV[i], ARGV[i + 2])
      end
      redis.call('RPUSH', ready, ARGV[i])
      if redis.call('LLEN', notify) < 64 then
        redis.call('RPUSH', notify, 1)
      end
    end
  end
end
