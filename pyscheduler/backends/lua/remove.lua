-- remove: drop a job and all its state, leaving a tombstone so the other instances drop it
-- too instead of re-creating it. A job not of our form is removed all the same.
-- KEYS: common layout, one (job, lease) pair, the group's change counters (see bump_epoch)
-- ARGV: name
-- Returns {removed, corrupt}: removed is 1, or 0 if the job was unknown.
local name = ARGV[1]
local key, lease_key = job_keys(1)
if redis.call('EXISTS', key) == 0 then return {0, corrupt} end
redis.call('DEL', key, lease_key)
redis.call('ZREM', DUE, name)
redis.call('SREM', JOBS, name)
redis.call('SADD', REMOVED, name)
bump_epoch(KEYS[6], 'removals')
return {1, corrupt}
