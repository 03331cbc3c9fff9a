-- Helpers shared by every pyscheduler script; RedisBackend prepends this file to each one.
--
-- Every script gets the same first three KEYS, then one (job hash, lease) pair per job:
--   KEYS[1] due zset, KEYS[2] jobs set, KEYS[3] removed set,
--   KEYS[2*i + 2] job hash of job i, KEYS[2*i + 3] lease of job i (i = 1 .. n)
-- The scripts run per occurrence (claim, finish) and register take their per-job values as
-- one JSON array of arrays rather than as separate arguments: the client then encodes one
-- string in C instead of each value in Python.
-- and returns {payload, corrupt}: corrupt lists name, reason, name, reason ... of the jobs
-- whose stored values were not of our form and were reset, for the caller to log.
--
-- Numbers: values from the arguments go through tonumber; integers are written back with
-- fmt ('%d', never Lua's default float formatting) and returned as strings where they may
-- exceed 2^31 (cjson.encode writes numbers with 14 significant digits), so epoch
-- milliseconds and microsecond fences stay exact (below 2^53).

local DUE, JOBS, REMOVED = KEYS[1], KEYS[2], KEYS[3]
-- 2^53: integers from here on are not exact in a Lua number.
local MAX_EXACT = 9007199254740992
local corrupt = {}

-- Every field of a job hash, read with one HMGET: asking for names rather than HGETALL halves
-- the reply, and a field added by someone else is ignored rather than copied around.
local HASH_FIELDS = {
  'v', 'def', 'next_run', 'paused', 'fence', 'manual_at', 'due', 'run_count', 'failure_count',
  'consecutive_failures', 'last_run', 'last_success', 'last_error', 'last_duration',
  'last_failed', 'owner', 'scheduled', 'attempt', 'kind', 'claimed_at', 'lease_ms', 'status',
  'retry_at', 'recoveries', 'lease_until', 'ver'}

-- Integer fields of a job hash ('' = none) and those that must always be set.
local INT_FIELDS = {
  'next_run', 'fence', 'manual_at', 'due', 'run_count', 'failure_count',
  'consecutive_failures', 'last_run', 'last_success', 'scheduled', 'attempt', 'claimed_at',
  'lease_ms', 'retry_at', 'recoveries', 'lease_until'}
local REQUIRED = {
  fence = true, run_count = true, failure_count = true, consecutive_failures = true,
  recoveries = true}
local STATUSES = {[''] = true, running = true, retry_wait = true, interrupted = true}
local KINDS = {[''] = true, regular = true, retry = true, recovery = true, manual = true}

-- The fields of a state reply, in the order RedisBackend reads them (STATE_FIELDS in
-- redis_replies.py). A reply is one JSON array of them, not a RESP array: the client parses
-- one string in C instead of building an object per field, which was its main cost per run.
local STATE_FIELDS = {
  'v', 'next_run', 'due', 'paused', 'fence', 'run_count', 'failure_count',
  'consecutive_failures', 'last_run', 'last_success', 'last_error', 'last_duration', 'status',
  'scheduled', 'attempt', 'last_failed', 'owner'}

-- A stored job's state reply, with its description last.
local function state_reply(key)
  local values = redis.call('HMGET', key, unpack(STATE_FIELDS))
  values[#values + 1] = redis.call('HGET', key, 'def')
  return cjson.encode(values)
end

local function fmt(value)
  if value == nil then return '' end
  return string.format('%d', value)
end

-- An optional integer argument: '' (or nil) for none, else a number or its decimal string.
local function opt_int(value)
  if value == nil or value == '' then return nil end
  return tonumber(value)
end

-- The server clock, read once per script: every time decision of a transition uses it.
local function server_now()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return sec * 1000 + math.floor(usec / 1000), sec * 1000000 + usec
end

local function job_keys(i)
  return KEYS[2 * i + 2], KEYS[2 * i + 3]
end

local function token(job)
  return job.owner .. '|' .. fmt(job.fence)
end

-- Parse a job hash and its lease. Returns the job, nil when not stored, or nil plus a reason
-- when a value is not of our form. Reads go through redis.pcall so that a foreign value
-- (WRONGTYPE) is reported rather than aborting the whole batch; TYPE is asked only then.
local function load(name, key, lease_key)
  local values = redis.pcall('HMGET', key, unpack(HASH_FIELDS))
  if values.err then
    return nil, 'the job key holds a ' .. redis.call('TYPE', key)['ok'] .. ', not a hash'
  end
  local h = {}
  for i, field in ipairs(HASH_FIELDS) do
    if values[i] then h[field] = values[i] end
  end
  if h.v ~= '1' then
    if next(h) == nil and redis.call('EXISTS', key) == 0 then return nil, nil end
    return nil, 'unknown layout version'
  end
  local job = {
    name = name, key = key, lease_key = lease_key, raw = h, def = h.def, ver = h.ver or '',
    owner = h.owner or '',
    kind = h.kind or '', status = h.status or '', last_error = h.last_error or '',
    last_duration = h.last_duration or ''}
  for _, f in ipairs(INT_FIELDS) do
    local v = h[f]
    if v == nil or v == '' then
      if REQUIRED[f] then return nil, 'field ' .. f .. ' is missing' end
    elseif #v > 17 or not string.match(v, '^%-?%d+$') then
      return nil, 'field ' .. f .. ' is not an integer'
    else
      local n = tonumber(v)
      -- Lua numbers are doubles: past 2^53 a fence + 1 rounds back down, and the job's
      -- fence would stop increasing. Our own values never get near (a fence is floored
      -- at TIME in microseconds: 2^53 µs is the year 2255).
      if n >= MAX_EXACT or n <= -MAX_EXACT then
        return nil, 'field ' .. f .. ' is out of the exact integer range'
      end
      job[f] = n
    end
  end
  for _, f in ipairs({'paused', 'last_failed'}) do
    if h[f] ~= '0' and h[f] ~= '1' then return nil, 'field ' .. f .. ' is not 0 or 1' end
    job[f] = h[f] == '1'
  end
  if not STATUSES[job.status] then return nil, 'unknown occurrence status' end
  if not KINDS[job.kind] then return nil, 'unknown claim kind' end
  if job.owner ~= '' and (job.scheduled == nil or job.attempt == nil or job.kind == ''
      or job.claimed_at == nil or job.lease_ms == nil) then
    return nil, 'incomplete claim record'
  end
  if job.status ~= '' and (job.owner == '' or job.lease_until == nil) then
    return nil, 'incomplete occurrence record'
  end
  if job.status ~= '' and job.status ~= 'running' and job.retry_at == nil then
    return nil, 'occurrence waits without a retry time'
  end
  if job.last_duration ~= '' and tonumber(job.last_duration) == nil then
    return nil, 'field last_duration is not a number'
  end
  if type(job.def) ~= 'string' or string.sub(job.def, 1, 1) ~= '{'
      or not pcall(cjson.decode, job.def) then
    return nil, 'the description is not a JSON object'
  end
  local value = redis.pcall('GET', lease_key)
  if type(value) == 'table' then
    return nil, 'the lease key holds a ' .. redis.call('TYPE', lease_key)['ok']
  end
  if value then
    if not string.match(value, '^.+|%d+$') then
      return nil, 'the lease is not of the form owner|fence'
    end
    -- A plain SET drops the TTL; such a lease would block the job forever.
    if redis.call('PTTL', lease_key) < 0 then return nil, 'the lease has no TTL' end
    job.lease = value
  end
  return job, nil
end

-- Delete a job whose stored values are not ours, without a tombstone: its registrants see
-- it missing and re-create it. The fence survives because claims floor it at TIME.
local function reset(name, key, lease_key, why)
  redis.call('DEL', key, lease_key)
  redis.call('ZREM', DUE, name)
  redis.call('SREM', JOBS, name)
  corrupt[#corrupt + 1] = name
  corrupt[#corrupt + 1] = why
end

-- The job, or nil when not stored; a job not of our form is reset and reported as nil.
local function fetch(name, key, lease_key)
  local job, why = load(name, key, lease_key)
  if why then
    reset(name, key, lease_key, why)
    return nil
  end
  return job
end

-- The due time as base.py defines it; the hash's due field mirrors the zset score.
local function due_time(job)
  if job.paused then return nil end
  if job.status == 'running' then return job.lease_until end
  if job.status ~= '' then return job.retry_at end
  if job.manual_at ~= nil and job.next_run ~= nil then
    return math.min(job.manual_at, job.next_run)
  end
  return job.manual_at or job.next_run
end

-- Re-index the job and write back the fields that changed: each transition ends here.
local function store(job)
  job.due = due_time(job)
  if job.due == nil then
    redis.call('ZREM', DUE, job.name)
  else
    redis.call('ZADD', DUE, fmt(job.due), job.name)
  end
  local fields = {
    v = '1', def = job.def, ver = job.ver or '', next_run = fmt(job.next_run),
    paused = job.paused and '1' or '0', fence = fmt(job.fence),
    manual_at = fmt(job.manual_at), due = fmt(job.due), run_count = fmt(job.run_count),
    failure_count = fmt(job.failure_count),
    consecutive_failures = fmt(job.consecutive_failures), last_run = fmt(job.last_run),
    last_success = fmt(job.last_success), last_error = job.last_error,
    last_duration = job.last_duration, last_failed = job.last_failed and '1' or '0',
    owner = job.owner, scheduled = fmt(job.scheduled), attempt = fmt(job.attempt),
    kind = job.kind, claimed_at = fmt(job.claimed_at), lease_ms = fmt(job.lease_ms),
    status = job.status, retry_at = fmt(job.retry_at), recoveries = fmt(job.recoveries),
    lease_until = fmt(job.lease_until)}
  local args, raw = {}, job.raw or {}
  for name, value in pairs(fields) do
    if raw[name] ~= value then
      args[#args + 1] = name
      args[#args + 1] = value
    end
  end
  if #args > 0 then redis.call('HSET', job.key, unpack(args)) end
  job.stored, job.raw = fields, fields
end

-- The state reply of a job just stored, from what store() wrote (no second read).
local function stored_reply(job)
  local values = {}
  for i, name in ipairs(STATE_FIELDS) do values[i] = job.stored[name] end
  return cjson.encode(values)
end

-- A due entry: {name, due_ms, next_run_ms, missing, removed, superseded} (base.py DueEntry).
local function entry(job, superseded)
  return {job.name, fmt(job.due), fmt(job.next_run), 0, 0, superseded and 1 or 0}
end

local function missing(name, removed)
  return {name, '', '', 1, removed and 1 or 0, 0}
end

-- Definition versions are '<schedule part>.<the rest>' (base.py definition_version); ''
-- on either side compares as no version.
local function superseded(stored, claimed)
  return stored ~= '' and claimed ~= '' and stored ~= claimed
end

local function schedule_part(version)
  return string.match(version, '^[^.]*')
end

-- Whether the owner token and fence still own the running occurrence. The lease does not
-- decide: a finish whose lease ran out but that nobody took over is still the latest word.
local function owns(job, owner, fence)
  return job ~= nil and job.status == 'running' and job.owner == owner and job.fence == fence
end

-- Delete the lease if it is this occurrence's; never another owner's.
local function release(job)
  if job.lease == token(job) then
    redis.call('DEL', job.lease_key)
  end
  job.lease = nil
end

local function settle(job, succeeded, err, now_ms)
  if succeeded then
    job.last_success = now_ms
    job.consecutive_failures = 0
    job.last_failed = false
  else
    job.failure_count = job.failure_count + 1
    job.consecutive_failures = job.consecutive_failures + 1
    if err ~= '' then job.last_error = err end
    job.last_failed = true
  end
  release(job)
  job.status, job.retry_at, job.recoveries, job.lease_until = '', nil, 0, nil
end

-- text cut to at most max bytes at a UTF-8 character boundary (where no continuation byte,
-- 0x80-0xBF, follows), so that what is kept decodes.
local function cut_utf8(text, max)
  if #text <= max then return text end
  local cut = max
  while cut > 0 do
    local byte = string.byte(text, cut + 1)
    if byte < 128 or byte >= 192 then break end
    cut = cut - 1
  end
  return string.sub(text, 1, cut)
end

-- Push value on the list at key and keep its first limit items, in one transition with the
-- rest. A value of another type under our key (not ours) is replaced, never fatal.
local function push_bounded(key, value, limit)
  local pushed = redis.pcall('LPUSH', key, value)
  if type(pushed) == 'table' and pushed.err then
    redis.call('DEL', key)
    redis.call('LPUSH', key, value)
  end
  redis.call('LTRIM', key, 0, limit - 1)
end

-- The run-history arguments of finish and claim, from ARGV[first] on: the key prefix of the
-- per-job lists ('{pfx}:history:', + the job's name), the group's list, its bound, and the
-- bound of an error text in bytes. The keys are derived, not passed: they carry the group's
-- hash tag, so they live in the job keys' Cluster slot. now_us is the script's clock, which
-- dates the records (a partitioned group's history merges its partitions' lists by it).
local function history_args(first, now_us)
  return {prefix = ARGV[first], group = ARGV[first + 1],
          group_limit = tonumber(ARGV[first + 2]), error_bytes = tonumber(ARGV[first + 3]),
          now_us = now_us}
end

-- Record the latest claim's attempt in the run history, finished (from its outcome row) or
-- abandoned (by a claim), keeping limit records of the job (nil or 0: no record): one JSON
-- object of text values (parse_dated_run in redis_history.py reads it back), pushed on the
-- job's list and the group's, each trimmed to its bound. duration is a decimal string of
-- seconds, outcome a RunOutcome of base.py. Called before the attempt is settled or retried,
-- which keeps the claim's fields anyway.
local function record_attempt(job, limit, duration, outcome, err, history)
  if limit == nil or limit <= 0 then return end
  local record = cjson.encode({
    v = 1, job = job.name, scheduled = fmt(job.scheduled), attempt = fmt(job.attempt),
    kind = job.kind, owner = job.owner, fence = fmt(job.fence), started = fmt(job.claimed_at),
    duration = duration, outcome = outcome, error = cut_utf8(err, history.error_bytes),
    recorded = fmt(history.now_us)})
  push_bounded(history.prefix .. job.name, record, limit)
  push_bounded(history.group, record, history.group_limit)
end

-- Record outcomes, each if its token and fence still own the occurrence. rows[i] = {name,
-- owner, fence, succeeded (0/1), error, duration (seconds, a decimal string),
-- retry_delay_ms ('' = settle the occurrence), still_running (0/1), outcome (succeeded,
-- failed, timed_out), history_limit (0 = no history record)}, for the job whose keys are
-- pair offset + i; history is history_args().
-- Returns per row the job's new state (stored_reply), or 0 if the outcome is stale (then
-- nothing was written).
local function finish_outcomes(rows, offset, now_ms, history)
  local states = {}
  for i, o in ipairs(rows) do
    local job = fetch(o[1], job_keys(offset + i))
    if owns(job, o[2], tonumber(o[3])) then
      record_attempt(job, tonumber(o[10]), o[6], o[9], o[5], history)
      local succeeded, err, retry_delay = tonumber(o[4]) == 1, o[5], opt_int(o[7])
      release(job)
      job.run_count = job.run_count + 1
      job.last_run, job.last_duration = job.claimed_at, o[6]
      if succeeded then
        settle(job, true, '', now_ms)
      else
        job.last_error = err
        if retry_delay ~= nil then
          job.status, job.retry_at = 'retry_wait', now_ms + math.max(0, retry_delay)
          if tonumber(o[8]) == 1 then  -- its handler goes on: not before its lease ends
            job.retry_at = math.max(job.retry_at, job.lease_until)
          end
        else
          settle(job, false, err, now_ms)
        end
      end
      store(job)
      states[i] = stored_reply(job)
    else
      states[i] = 0
    end
  end
  return states
end

-- The group's change counters (a hash: ``members``, ``removals``), which claim replies carry
-- so that every instance notices at its next claim that an instance joined or left, or that
-- a job was removed or found gone (its state lost or reset). A value not of our form is replaced: only a change of value counts.
local function bump_epoch(key, field)
  local counted = redis.pcall('HINCRBY', key, field, 1)
  if type(counted) == 'table' and counted.err then
    redis.call('DEL', key)
    redis.call('HSET', key, field, '1')
  end
end

-- The counters as two decimal strings ('0' for a missing value or one not of our form).
local function read_epochs(key)
  local values = redis.pcall('HMGET', key, 'members', 'removals')
  local out = {'0', '0'}
  if type(values) == 'table' and not values.err then
    for i = 1, 2 do
      local value = values[i]
      if type(value) == 'string' and #value <= 15 and string.match(value, '^%d+$') then
        out[i] = value
      end
    end
  end
  return out
end
