-- register: create the jobs not yet stored, update the description of the others.
-- KEYS: common layout, one (job, lease) pair per definition
-- ARGV: per definition 4 values: name, first_run_ms ('' = none), start_paused (0/1),
--       description (a JSON object)
-- Returns {states, corrupt}: states[i] is the job's state_reply (without
-- its description, which the caller just sent).
local states = {}
for i = 1, #ARGV / 4 do
  local a = 4 * (i - 1)
  local name, def = ARGV[a + 1], ARGV[a + 4]
  local key, lease_key = job_keys(i)
  redis.call('SREM', REMOVED, name)
  local job = fetch(name, key, lease_key)
  if job == nil then
    job = {
      name = name, key = key, lease_key = lease_key, def = def,
      next_run = opt_int(ARGV[a + 2]), paused = ARGV[a + 3] == '1', fence = 0,
      run_count = 0, failure_count = 0, consecutive_failures = 0, last_failed = false,
      last_error = '', last_duration = '', owner = '', kind = '', status = '',
      recoveries = 0}
  else
    job.def = def
  end
  redis.call('SADD', JOBS, name)
  store(job)
  states[i] = stored_reply(job)
end
return {states, corrupt}
