-- reset: delete a job whose hash the client could not parse, as load() does for values the
-- scripts cannot parse (no tombstone: its registrants re-create it).
-- KEYS: common layout, one (job, lease) pair
-- ARGV: name, reason
-- Returns {1, corrupt}.
local key, lease_key = job_keys(1)
reset(ARGV[1], key, lease_key, ARGV[2])
return {1, corrupt}
