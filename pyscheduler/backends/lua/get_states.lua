-- get_states: read jobs, resetting those not of our form.
-- KEYS: common layout, one (job, lease) pair per name
-- ARGV: the names
-- Returns {states, corrupt}: states[i] is the job hash as HGETALL pairs, or 0 if unknown.
local states = {}
for i = 1, #ARGV do
  local job = fetch(ARGV[i], job_keys(i))
  if job == nil then
    states[i] = 0
  else
    states[i] = redis.call('HGETALL', job.key)
  end
end
return {states, corrupt}
