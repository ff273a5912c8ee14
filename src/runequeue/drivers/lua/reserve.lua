#!lua flags=allow-oom
-- allow-oom: it runs when Redis is full (maxmemory, noeviction), so a full Redis stops dispatch,
-- not work: jobs are still taken, renewed, finished and failed, which frees the memory.
-- reserve: make due delayed jobs ready, recover expired leases, then lease up to ARGV[1] jobs.
-- KEYS[1] = ready list, KEYS[2] = delayed zset, KEYS[3] = reserved zset (id -> lease deadline ms),
-- KEYS[4] = payload hash, KEYS[5] = attempts hash, KEYS[6] = tries hash, KEYS[7] = token hash,
-- KEYS[8] = dead zset (failed outbox), KEYS[9] = errors hash, KEYS[10] = notify list,
-- KEYS[11] = recovered list (jobs whose worker died running them)
-- ARGV[1] = how many jobs to lease (0: only promote and recover), ARGV[2] = lease ms,
-- ARGV[3] = lease token, ARGV[4] = default max tries, ARGV[5] = at most this many jobs promoted
-- and recovered per call, ARGV[6] = largest payload handed out, in bytes, ARGV[7] = 1 when the
-- caller runs nothing else: it may be given one recovered job, to run alone
-- Returns {ms until the next delayed job is due or -1, recovered jobs waiting, 1 if the job
-- handed out is a recovered one else 0, id, payload, attempts, id, payload, ...}.
-- All times are Redis server time, so worker clocks never matter.
--
-- A recovered job goes only to a caller running nothing, and by itself: if it is the job that
-- kills its worker, it dies alone, and the jobs that were running beside it (recovered too) each
-- run alone once and finish. Ordinary callers take ordinary jobs and are told recovered ones wait.
--
-- Redis does not roll back a script that fails half-way. So every value read from a hash is
-- checked here before use (a bad one fails its job, never the script), and every move writes a
-- job's new place before it removes the old one: an error can at worst leave a job in two places,
-- which the lease step tolerates (it skips an id held elsewhere), never in none.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[5])
local SLICE = 500 -- ids per command: Lua's unpack has a stack limit
local INVALID = 'runequeue.errors.InvalidPayload: '

-- A count stored in a hash (false: absent, so `default`), or nil when it is not an integer.
local function count_of(value, default)
  local text = value or default
  local n = tonumber(text)
  if n and n == math.floor(n) and n > -1e15 and n < 1e15 then
    return n
  end
  return nil
end

-- Why a job's stored counts cannot be used, or nil when they can.
local function corrupt(attempts, tries, raw_attempts, raw_tries)
  local field, value = nil, nil
  if attempts == nil then
    field, value = 'attempts', raw_attempts
  elseif tries == nil then
    field, value = 'tries', raw_tries
  else
    return nil
  end
  local shown = string.gsub(string.sub(value, 1, 40), '%c', '?') -- one line in failed_jobs
  return INVALID .. 'non-integer ' .. field .. ' value "' .. shown ..
    '" stored in Redis for this job, so its tries cannot be counted (not run)'
end

-- Into the failed outbox. The outbox records a job with its payload, so it gets one, if empty.
local function fail(id, reason)
  redis.call('HSETNX', KEYS[4], id, '')
  redis.call('ZADD', KEYS[8], now, id)
  redis.call('HSET', KEYS[9], id, reason)
end

-- One command per slice of `ids`; the replies joined, in the order of `ids`.
local function each_slice(command, key, ids)
  local values = {}
  for first = 1, #ids, SLICE do
    local reply = redis.call(command, key, unpack(ids, first, math.min(first + SLICE - 1, #ids)))
    for i = 1, #reply do
      values[first + i - 1] = reply[i]
    end
  end
  return values
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
if #due > 0 then
  redis.call('RPUSH', KEYS[1], unpack(due))
  redis.call('ZREM', KEYS[2], unpack(due))
end

-- A lease that expired belongs to a worker that vanished. Its attempt was counted at reserve
-- (invariant 3), so a job that kills every worker running it ends in the outbox after max tries.
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
local moved = #due -- jobs this call made ready
if #expired > 0 then
  local raw_attempts = redis.call('HMGET', KEYS[5], unpack(expired))
  local raw_tries = redis.call('HMGET', KEYS[6], unpack(expired))
  for i, id in ipairs(expired) do
    local attempts = count_of(raw_attempts[i], '0')
    local tries = count_of(raw_tries[i], ARGV[4])
    local why = corrupt(attempts, tries, raw_attempts[i], raw_tries[i])
    if why then
      fail(id, why)
    elseif attempts >= tries then
      fail(id, 'runequeue.errors.LeaseExpired: the worker running attempt ' .. attempts ..
        ' stopped renewing its lease (killed or stalled), and the job has no tries left')
    else
      redis.call('RPUSH', KEYS[11], id) -- apart: it runs alone (it may be what killed the worker)
      moved = moved + 1
    end
  end
  redis.call('ZREM', KEYS[3], unpack(expired))
  redis.call('HDEL', KEYS[7], unpack(expired))
end

-- Which of the listed `ids` to lease, with their attempt numbers; the others are failed here or,
-- when this call or a lease already holds the job, skipped.
local function choose(ids)
  local leased_ids = each_slice('ZMSCORE', KEYS[3], ids)
  local raw_attempts = each_slice('HMGET', KEYS[5], ids)
  local raw_tries = each_slice('HMGET', KEYS[6], ids)
  local limit_bytes = tonumber(ARGV[6])
  local chosen, attempts, seen = {}, {}, {}
  for i, id in ipairs(ids) do
    if seen[id] or leased_ids[i] then
      -- Listed again while this call or a lease holds the job: it runs from there, once.
      -- Handing it out here would run it twice at once.
    else
      seen[id] = true
      local done = count_of(raw_attempts[i], '0')
      local why = corrupt(done, count_of(raw_tries[i], ARGV[4]), raw_attempts[i], raw_tries[i])
      local size = redis.call('HSTRLEN', KEYS[4], id)
      if size == 0 and redis.call('HEXISTS', KEYS[4], id) == 0 then
        fail(id, INVALID .. 'the ready list names this job but its payload is missing ' ..
          '(nothing to run)')
      elseif why then
        fail(id, why)
      elseif size > limit_bytes then
        -- Too large to hand to a worker: failed here, without the worker ever reading it.
        -- Only its head is kept, for forensics.
        local head = string.sub(redis.call('HGET', KEYS[4], id), 1, 65536)
        redis.call('HSET', KEYS[4], id, head)
        redis.call('HSET', KEYS[5], id, done + 1)
        fail(id, 'runequeue.errors.PayloadTooLarge: stored payload is ' .. size ..
          ' bytes; the limit is ' .. limit_bytes .. ' (only its first 65536 are kept)')
      else
        chosen[#chosen + 1] = id
        attempts[#chosen] = done + 1
      end
    end
  end
  return chosen, attempts
end

-- Lease jobs from the list `source`: the first `count` of it. Returns how many were leased.
local result = {-1, 0, 0}
local function take(source, count)
  local ids = count > 0 and redis.call('LRANGE', source, 0, count - 1) or {}
  if #ids == 0 then
    return 0
  end
  local leased, attempts = choose(ids)
  local deadline = now + tonumber(ARGV[2])
  -- The lease (attempt, token and deadline) and the payloads of all leased jobs, a few calls per
  -- slice rather than per job: a call from Lua costs a few microseconds whatever it carries.
  for first = 1, #leased, SLICE do
    local last = math.min(first + SLICE - 1, #leased)
    local counts, tokens, deadlines = {}, {}, {}
    for i = first, last do
      counts[#counts + 1] = leased[i]
      counts[#counts + 1] = attempts[i]
      tokens[#tokens + 1] = leased[i]
      tokens[#tokens + 1] = ARGV[3]
      deadlines[#deadlines + 1] = deadline
      deadlines[#deadlines + 1] = leased[i]
    end
    redis.call('HSET', KEYS[5], unpack(counts))
    redis.call('HSET', KEYS[7], unpack(tokens))
    redis.call('ZADD', KEYS[3], unpack(deadlines))
    local payloads = redis.call('HMGET', KEYS[4], unpack(leased, first, last))
    for i = first, last do
      result[#result + 1] = leased[i]
      result[#result + 1] = payloads[i - first + 1]
      result[#result + 1] = attempts[i]
    end
  end
  -- Off the list last, once every one of them is leased, failed or known to be held.
  redis.call('LTRIM', source, #ids, -1)
  return #leased
end

local count = tonumber(ARGV[1])
-- One recovered job for a caller running nothing; if none could be leased, ordinary ones.
if not (count > 0 and ARGV[7] == '1' and take(KEYS[11], 1) > 0) then
  take(KEYS[1], count)
else
  result[3] = 1
end
local waiting = redis.call('LLEN', KEYS[11])
result[2] = waiting

local ready = redis.call('LLEN', KEYS[1])
if ready == 0 and waiting == 0 then
  redis.call('DEL', KEYS[10]) -- nothing ready: stale wake-ups would only cause empty reserves
elseif moved > 0 then
  -- Jobs made ready here (due, or recovered from a dead worker) that this call did not take,
  -- say in a sweep: wake idle workers for them, as a push would.
  local tokens = math.min(moved, ready + waiting, 64 - redis.call('LLEN', KEYS[10]))
  for _ = 1, tokens do
    redis.call('RPUSH', KEYS[10], 1)
  end
end
local nextdue = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nextdue > 0 then
  result[1] = math.max(0, tonumber(nextdue[2]) - now)
end
return result
