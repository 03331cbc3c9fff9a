-- claim: record the outcomes given, then claim each requested occurrence on its own, then
-- peek at other due jobs.
-- KEYS: common layout, one (job, lease) pair per request, then one per outcome, and last
--   the group's change counters (see bump_epoch)
-- ARGV: [1] lease_ms, [2] peek, [3] job key prefix, [4] lease key prefix (for the peeked
--       jobs, which share the hash tag), [5..8] the run-history arguments (see history_args
--       in common.lua), [9] the requests as a JSON array of arrays of 10 values: name,
--       owner, expected_due_ms, expected_next_run_ms, scheduled_ms, following_ms,
--       misfire_grace_ms ('' = none for the last four), max_recoveries, definition version
--       ('' = any), history_limit (0 or missing = no record of an abandoned attempt);
--       [10] optionally, the outcomes to record first, as finish takes them
-- Returns {{claimed, finished}, corrupt}: finished is what finish_outcomes returns for the
-- outcomes, and claimed the JSON array
-- [now_ms, claims, refused, due, skipped, abandoned, members_epoch, removals_epoch]:
--   claims[i] = {name, owner, fence, scheduled_ms, attempt, kind, claimed_at_ms, lease_ms}
--   refused[i], due[i] = {name, due_ms, next_run_ms, missing, removed, superseded (0/1)}
local lease_ms, peek = tonumber(ARGV[1]), tonumber(ARGV[2])
local now_ms, now_us = server_now()
local history = history_args(5, now_us)
local claims, refused, due, skipped, abandoned = {}, {}, {}, {}, {}
-- claim_rules.ABANDONED_ERROR: the last error of an abandoned occurrence
local ABANDONED_ERROR = 'abandoned: its holder stopped before finishing and recovery is '
                        .. 'exhausted or disabled'

local function claim_of(job)
  return {job.name, job.owner, fmt(job.fence), fmt(job.scheduled), job.attempt, job.kind,
          fmt(job.claimed_at), job.lease_ms}
end

local function take(job, req, scheduled, attempt, kind)
  job.fence = math.max(job.fence + 1, now_us)
  job.owner, job.scheduled, job.attempt, job.kind = req.owner, scheduled, attempt, kind
  job.claimed_at, job.lease_ms, job.lease_until = now_ms, lease_ms, now_ms + lease_ms
  job.status, job.retry_at = 'running', nil
  job.lease = token(job)
  redis.call('SET', job.lease_key, job.lease, 'PX', fmt(lease_ms))
  store(job)
  return claim_of(job)
end

local function claim_regular(job, req)
  local scheduled, following = req.scheduled, req.following
  if job.next_run == nil or req.expected_next ~= job.next_run or scheduled == nil
      or scheduled < job.next_run or scheduled > now_ms
      or (following ~= nil and following <= scheduled) then
    return nil
  end
  job.next_run = following
  if req.grace ~= nil and now_ms - scheduled > req.grace then
    store(job)
    skipped[#skipped + 1] = job.name
    return nil
  end
  return take(job, req, scheduled, 1, 'regular')
end

local function claim_one(job, req)
  if job.paused or job.due == nil or job.due ~= req.expected_due or job.due > now_ms then
    return nil
  end
  if job.status == 'retry_wait' then
    return take(job, req, job.scheduled, job.attempt + 1, 'retry')
  end
  if job.status ~= '' then  -- an orphan (its lease ran out) or interrupted at shutdown
    if job.status == 'running' and job.lease == token(job) and job.lease_until > now_ms then
      return nil
    end
    if job.recoveries >= req.max_recoveries then
      -- No outcome will report this attempt: the claim that gives it up records it.
      record_attempt(job, req.history_limit, '0.0', 'abandoned', ABANDONED_ERROR, history)
      settle(job, false, ABANDONED_ERROR, now_ms)
      store(job)
      abandoned[#abandoned + 1] = job.name
      return nil
    end
    job.recoveries = job.recoveries + 1
    return take(job, req, job.scheduled, job.attempt + 1, 'recovery')
  end
  if job.manual_at ~= nil and (job.next_run == nil or job.manual_at <= job.next_run) then
    local scheduled = job.manual_at
    job.manual_at = nil
    return take(job, req, scheduled, 1, 'manual')
  end
  return claim_regular(job, req)
end

-- The refusal of a request for an occurrence the job has moved past (claimed by another
-- instance, paused, settled), read from the indexed fields alone; nil when the job must be
-- loaded whole (it is due as asked, the request is a re-sent one, or the fields are not of
-- our form, which the full load then reports). In a group of schedulers most claims are
-- refused, and a full load costs several times this.
local function moved_past(req, key)
  local fields = redis.pcall('HMGET', key, 'v', 'due', 'next_run', 'owner', 'ver')
  if fields.err then return nil end
  local v, due, next_run, owner, ver = fields[1], fields[2], fields[3], fields[4], fields[5]
  if v ~= '1' or owner == req.owner or type(due) ~= 'string' or type(next_run) ~= 'string' then
    return nil
  end
  for _, value in ipairs({due, next_run}) do
    if value ~= '' and (#value > 17 or not string.match(value, '^%-?%d+$')) then return nil end
  end
  if opt_int(due) == req.expected_due then return nil end
  return {req.name, due, next_run, 0, 0, superseded(ver or '', req.version) and 1 or 0}
end

local rows = cjson.decode(ARGV[9])
local finished = {}
if ARGV[10] then
  -- First, so that what they change (a retry due at once, a job settled) is what is claimed.
  finished = finish_outcomes(cjson.decode(ARGV[10]), #rows, now_ms, history)
end

local requested, distinct = {}, 0
for i, r in ipairs(rows) do
  local req = {
    name = r[1], owner = r[2], expected_due = tonumber(r[3]), expected_next = opt_int(r[4]),
    scheduled = opt_int(r[5]), following = opt_int(r[6]), grace = opt_int(r[7]),
    max_recoveries = tonumber(r[8]), version = r[9] or '', history_limit = tonumber(r[10])}
  if not requested[req.name] then
    requested[req.name] = true
    distinct = distinct + 1
  end
  local key, lease_key = job_keys(i)
  local stale = moved_past(req, key)
  local job, reset_now
  if stale == nil then job, reset_now = fetch(req.name, key, lease_key) end
  if stale ~= nil then
    refused[#refused + 1] = stale
  elseif job == nil then
    local removed = not reset_now and redis.call('SISMEMBER', REMOVED, req.name) == 1
    refused[#refused + 1] = missing(req.name, removed)
  elseif job.owner ~= '' and job.owner == req.owner then  -- a re-sent request, reply lost
    claims[#claims + 1] = claim_of(job)
  elseif superseded(job.ver, req.version) then
    refused[#refused + 1] = entry(job, true)
  else
    local claim = claim_one(job, req)
    if claim then
      claims[#claims + 1] = claim
    else
      refused[#refused + 1] = entry(job)
    end
  end
end

if peek > 0 then
  local names = redis.call('ZRANGEBYSCORE', DUE, '-inf', fmt(now_ms), 'LIMIT', 0,
                           peek + distinct)
  for _, name in ipairs(names) do
    if #due >= peek then break end
    if not requested[name] then
      local key, lease_key = ARGV[3] .. name, ARGV[4] .. name
      local job, reset_now = fetch(name, key, lease_key)
      if job ~= nil then
        due[#due + 1] = entry(job)
      else
        -- Lost or reset: its registrants, if any, re-create it. This caller may not be one of
        -- them, and the others may never ask for it (another instance owns it): the counter
        -- tells them all to look.
        redis.call('ZREM', DUE, name)
        bump_epoch(KEYS[#KEYS], 'removals')
        local removed = not reset_now and redis.call('SISMEMBER', REMOVED, name) == 1
        due[#due + 1] = missing(name, removed)
      end
    end
  end
end

local epochs = read_epochs(KEYS[#KEYS])
return {{cjson.encode({fmt(now_ms), claims, refused, due, skipped, abandoned, epochs[1],
                       epochs[2]}), finished}, corrupt}
