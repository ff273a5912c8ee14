-- batch: a function that ack_then.lua, bury.lua and batch_failed.lua are given ahead of their own
-- code (after followers.lua): move a batch's counters as one of its jobs settles, and store the
-- batch's callbacks that are then due, in the caller's atomic step. The rules are
-- runequeue.batch_state's (its docstring says them); the conformance suite holds both to one
-- behaviour.
-- The batch hash: name, queue, total, pending, failed, allow ('1': failures allowed), created,
-- finished and cancelled (epoch seconds, '' until set), and per callback (then, catch, finally)
-- <name>:id, <name>:raw, <name>:tries, removed once it is stored. The failed set: the ids of
-- its jobs failed now.
local function batch_now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

local function store_callback(batch, name, payload, tries, ready, notify)
  local id = redis.call('HGET', batch, name .. ':id')
  if not id then
    return
  end
  local raw = redis.call('HGET', batch, name .. ':raw')
  local max_tries = redis.call('HGET', batch, name .. ':tries') or ''
  redis.call('HDEL', batch, name .. ':id', name .. ':raw', name .. ':tries')
  store_job(payload, tries, ready, notify, id, raw, max_tries)
end

-- Returns 1, or 0 when the batch does not exist (pruned, or never stored).
local function settle_batch(batch, failed_set, job_id, succeeded, payload, tries, ready, notify)
  if redis.call('EXISTS', batch) == 0 then
    return 0
  end
  local due = {}
  if succeeded then
    if redis.call('HINCRBY', batch, 'pending', -1) < 0 then
      redis.call('HSET', batch, 'pending', 0)
    end
    redis.call('SREM', failed_set, job_id)
    if redis.call('HGET', batch, 'pending') == '0' and redis.call('HGET', batch, 'failed') == '0' then
      due[#due + 1] = 'then'
    end
  else
    if redis.call('SADD', failed_set, job_id) == 0 then
      return 1  -- recorded already
    end
    if redis.call('HINCRBY', batch, 'failed', 1) == 1 then
      due[#due + 1] = 'catch'
      if redis.call('HGET', batch, 'allow') ~= '1' and redis.call('HGET', batch, 'cancelled') == '' then
        redis.call('HSET', batch, 'cancelled', batch_now())
      end
    end
  end
  if tonumber(redis.call('HGET', batch, 'pending')) == redis.call('SCARD', failed_set) then
    if redis.call('HGET', batch, 'finished') == '' then
      redis.call('HSET', batch, 'finished', batch_now())
    end
    due[#due + 1] = 'finally'
  end
  for _, name in ipairs(due) do
    store_callback(batch, name, payload, tries, ready, notify)
  end
  return 1
end
