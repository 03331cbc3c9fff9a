-- set_paused: pause (take out of the due index) or resume one job.
-- KEYS: common layout, one (job, lease) pair
-- ARGV: name, paused (0/1)
-- Returns {entry, corrupt}: entry = {name, due_ms, next_run_ms, 0, 0}, or 0 if unknown.
local job = fetch(ARGV[1], job_keys(1))
if job == nil then return {0, corrupt} end
job.paused = ARGV[2] == '1'
store(job)
return {entry(job), corrupt}
