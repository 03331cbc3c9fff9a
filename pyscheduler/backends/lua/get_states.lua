-- get_states: read jobs, resetting those not of our form.
-- KEYS: common layout, one (job, lease) pair per name
-- ARGV: the names
-- Returns {states, corrupt}: states[i] is the job's state_reply, or 0 if unknown.
local states = {}
for i = 1, #ARGV do
  local job = fetch(ARGV[i], job_keys(i))
  if job == nil then
    states[i] = 0
  else
    states[i] = state_reply(job.key)
  end
end
return {states, corrupt}
