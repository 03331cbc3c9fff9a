-- register: create the jobs not yet stored, update the description of the others.
-- KEYS: common layout, one (job, lease) pair per definition
-- ARGV: the definitions as a JSON array of arrays of 5 values: name, first_run_ms ('' =
--       none), start_paused (0/1), description (a JSON object, as a string), version ('' =
--       none). A version that differs from the stored one replaces it, and when its schedule
--       part differs the job's regular occurrences restart at first_run_ms (base.py).
-- Returns {states, corrupt}: states[i] is the job's stored_reply (without its description,
-- which the caller just sent).
local states = {}
for i, d in ipairs(cjson.decode(ARGV[1])) do
  local name, def, version = d[1], d[4], d[5] or ''
  local key, lease_key = job_keys(i)
  redis.call('SREM', REMOVED, name)
  local job = fetch(name, key, lease_key)
  if job == nil then
    job = {
      name = name, key = key, lease_key = lease_key, def = def,
      next_run = opt_int(d[2]), paused = tonumber(d[3]) == 1, fence = 0,
      run_count = 0, failure_count = 0, consecutive_failures = 0, last_failed = false,
      last_error = '', last_duration = '', owner = '', kind = '', status = '',
      recoveries = 0, ver = version}
  else
    job.def = def
    if version ~= '' and version ~= job.ver then
      -- A job with no occurrence left (a one-time job that ran) stays done.
      if job.ver ~= '' and job.next_run ~= nil
          and schedule_part(job.ver) ~= schedule_part(version) then
        job.next_run = opt_int(d[2])
      end
      job.ver = version
    end
  end
  redis.call('SADD', JOBS, name)
  store(job)
  states[i] = stored_reply(job)
end
return {states, corrupt}
