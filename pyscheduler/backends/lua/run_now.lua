-- run_now: ask for an extra occurrence now (kept if one is already pending).
-- KEYS: common layout, one (job, lease) pair
-- ARGV: name
-- Returns {entry, corrupt}: the job's due entry, or a missing one if unknown (removed when a
-- tombstone says so).
local job = fetch(ARGV[1], job_keys(1))
if job == nil then return {missing(ARGV[1], redis.call('SISMEMBER', REMOVED, ARGV[1]) == 1), corrupt} end
if job.manual_at == nil then
  job.manual_at = server_now()
end
store(job)
return {entry(job), corrupt}
