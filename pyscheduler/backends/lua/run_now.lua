-- run_now: ask for an extra occurrence now (kept if one is already pending).
-- KEYS: common layout, one (job, lease) pair
-- ARGV: name
-- Returns {entry, corrupt}: entry = {name, due_ms, next_run_ms, 0, 0}, or 0 if unknown.
local job = fetch(ARGV[1], job_keys(1))
if job == nil then return {0, corrupt} end
if job.manual_at == nil then
  job.manual_at = server_now()
end
store(job)
return {entry(job), corrupt}
