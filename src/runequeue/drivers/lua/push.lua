-- push: store jobs, idempotently by id.
-- KEYS[1] = ready list, KEYS[2] = delayed zset, KEYS[3] = payload hash, KEYS[4] = tries hash,
-- KEYS[5] = notify list
-- ARGV = groups of four: id, payload, delay_ms, max_tries ('' = the worker's default)
-- Returns the number of jobs stored (a job id already present is skipped, so a dispatch retried
-- after an ambiguous network error cannot store the job twice).
local now = nil  -- Redis's clock, read only if a job is delayed (each call costs ~3 us)
local ready = {}
local stored = 0
for i = 1, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[3], id, ARGV[i + 1]) == 1 then
    stored = stored + 1
    if ARGV[i + 3] ~= '' then
      redis.call('HSET', KEYS[4], id, ARGV[i + 3])
    end
    local delay = tonumber(ARGV[i + 2])
    if delay > 0 then
      if now == nil then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      redis.call('ZADD', KEYS[2], now + delay, id)
    else
      ready[#ready + 1] = id
      if #ready == 1000 then
        redis.call('RPUSH', KEYS[1], unpack(ready))
        ready = {}
      end
    end
  end
end
if #ready > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ready))
end
-- One wake-up token per idle worker it may need, capped: workers drain the list once awake.
if stored > 0 and redis.call('LLEN', KEYS[5]) < 64 then
  for _ = 1, math.min(stored, 64) do
    redis.call('RPUSH', KEYS[5], 1)
  end
end
return stored
