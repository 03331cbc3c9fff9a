-- remove: drop a job and all its state, leaving a tombstone so the other instances drop it
-- too instead of re-creating it. A job not of our form is removed all the same. Its run
-- history goes too: its own list, and its records in the group's.
-- KEYS: common layout, one (job, lease) pair, the group's change counters (see bump_epoch)
-- ARGV: name, the key prefix of the per-job history lists, the group's history list (keys
--       derived with the group's hash tag, as in history_args of common.lua)
-- Returns {removed, corrupt}: removed is 1, or 0 if the job was unknown.
local name = ARGV[1]
local key, lease_key = job_keys(1)
if redis.call('EXISTS', key) == 0 then return {0, corrupt} end
redis.call('DEL', key, lease_key, ARGV[2] .. name)
redis.call('ZREM', DUE, name)
redis.call('SREM', JOBS, name)
redis.call('SADD', REMOVED, name)
bump_epoch(KEYS[6], 'removals')

-- The group's list is bounded (GROUP_HISTORY_LIMIT): rewritten without the job's records
-- only if it has some. Records not of our form are left to the readers, which skip them.
local group = ARGV[3]
local records = redis.pcall('LRANGE', group, 0, -1)
if type(records) == 'table' and not records.err then
  local kept, dropped = {}, false
  for _, raw in ipairs(records) do
    local ok, record = pcall(cjson.decode, raw)
    if ok and type(record) == 'table' and record.job == name then
      dropped = true
    else
      kept[#kept + 1] = raw
    end
  end
  if dropped then
    redis.call('DEL', group)
    for i = 1, #kept, 500 do
      redis.call('RPUSH', group, unpack(kept, i, math.min(i + 499, #kept)))
    end
  end
end
return {1, corrupt}
