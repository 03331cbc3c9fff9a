-- set_paused: pause (take out of the due index) or resume one job.
-- KEYS: common layout, one (job, lease) pair
-- ARGV: name, paused (0/1)
-- Returns {entry, corrupt}: the job's due entry, or a missing one if unknown (removed when a
-- tombstone says so).
local job = fetch(ARGV[1], job_keys(1))
if job == nil then return {missing(ARGV[1], redis.call('SISMEMBER', REMOVED, ARGV[1]) == 1), corrupt} end
job.paused = ARGV[2] == '1'
store(job)
return {entry(job), corrupt}
