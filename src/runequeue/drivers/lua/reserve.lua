-- reserve: make due delayed jobs ready, recover expired leases, then lease up to ARGV[1] jobs.
-- KEYS[1] = ready list, KEYS[2] = delayed zset, KEYS[3] = reserved zset (id -> lease deadline ms),
-- KEYS[4] = payload hash, KEYS[5] = attempts hash, KEYS[6] = tries hash, KEYS[7] = token hash,
-- KEYS[8] = dead zset (failed outbox), KEYS[9] = errors hash, KEYS[10] = notify list
-- ARGV[1] = how many jobs to lease (0: only promote and recover), ARGV[2] = lease ms,
-- ARGV[3] = lease token, ARGV[4] = default max tries, ARGV[5] = at most this many jobs promoted
-- and recovered per call, ARGV[6] = largest payload handed out, in bytes
-- Returns {ms until the next delayed job is due or -1, id, payload, attempts, id, payload, ...}.
-- All times are Redis server time, so worker clocks never matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[5])

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
if #due > 0 then
  redis.call('ZREM', KEYS[2], unpack(due))
  redis.call('RPUSH', KEYS[1], unpack(due))
end

-- A lease that expired belongs to a worker that vanished. Its attempt was counted at reserve
-- (invariant 3), so a job that kills every worker running it ends in the outbox after max tries.
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
local moved = #due -- jobs this call made ready
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[7], id)
  local attempts = tonumber(redis.call('HGET', KEYS[5], id) or '0')
  local tries = tonumber(redis.call('HGET', KEYS[6], id) or ARGV[4])
  if attempts >= tries then
    redis.call('ZADD', KEYS[8], now, id)
    redis.call('HSET', KEYS[9], id,
      'runequeue.errors.LeaseExpired: the worker running attempt ' .. attempts ..
      ' stopped renewing its lease (killed or stalled), and the job has no tries left')
  else
    redis.call('LPUSH', KEYS[1], id) -- to the front: it had already waited its turn
    moved = moved + 1
  end
end

local result = {-1}
local count = tonumber(ARGV[1])
local ids = count > 0 and redis.call('LPOP', KEYS[1], count) or false
if ids then
  local deadline = now + tonumber(ARGV[2])
  local limit_bytes = tonumber(ARGV[6])
  local leased, attempts = {}, {}
  for _, id in ipairs(ids) do
    local size = redis.call('HSTRLEN', KEYS[4], id)
    if size > limit_bytes then
      -- Too large to hand to a worker: failed here, without the worker ever reading it.
      -- Only its head is kept, for forensics.
      local head = string.sub(redis.call('HGET', KEYS[4], id), 1, 65536)
      redis.call('HSET', KEYS[4], id, head)
      redis.call('HINCRBY', KEYS[5], id, 1)
      redis.call('ZADD', KEYS[8], now, id)
      redis.call('HSET', KEYS[9], id, 'runequeue.errors.PayloadTooLarge: stored payload is ' ..
        size .. ' bytes; the limit is ' .. limit_bytes .. ' (only its first 65536 are kept)')
    elseif size > 0 or redis.call('HEXISTS', KEYS[4], id) == 1 then
      leased[#leased + 1] = id
      attempts[#leased] = redis.call('HINCRBY', KEYS[5], id, 1)
    end
  end
  -- The lease (token and deadline) and the payloads of all leased jobs, a few calls per slice
  -- rather than per job: a call from Lua costs a few microseconds whatever it carries.
  local SLICE = 500
  for first = 1, #leased, SLICE do
    local last = math.min(first + SLICE - 1, #leased)
    local tokens, deadlines = {}, {}
    for i = first, last do
      tokens[#tokens + 1] = leased[i]
      tokens[#tokens + 1] = ARGV[3]
      deadlines[#deadlines + 1] = deadline
      deadlines[#deadlines + 1] = leased[i]
    end
    redis.call('HSET', KEYS[7], unpack(tokens))
    redis.call('ZADD', KEYS[3], unpack(deadlines))
    local payloads = redis.call('HMGET', KEYS[4], unpack(leased, first, last))
    for i = first, last do
      result[#result + 1] = leased[i]
      result[#result + 1] = payloads[i - first + 1]
      result[#result + 1] = attempts[i]
    end
  end
end

local ready = redis.call('LLEN', KEYS[1])
if ready == 0 then
  redis.call('DEL', KEYS[10]) -- nothing ready: stale wake-ups would only cause empty reserves
elseif moved > 0 then
  -- Jobs made ready here (due, or recovered from a dead worker) that this call did not take,
  -- say in a sweep: wake idle workers for them, as a push would.
  local tokens = math.min(moved, ready, 64 - redis.call('LLEN', KEYS[10]))
  for _ = 1, tokens do
    redis.call('RPUSH', KEYS[10], 1)
  end
end
local nextdue = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nextdue > 0 then
  result[1] = math.max(0, tonumber(nextdue[2]) - now)
end
return result
