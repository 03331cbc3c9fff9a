-- refresh: set each lease still held by its token to expire lease_ms from now.
-- KEYS: common layout, one (job, lease) pair per lease
-- ARGV: lease_ms, then per lease 3 values: name, owner, fence
-- Returns {held, corrupt}: held[i] is 1 if lease i is still held (and now extended), else 0.
-- PEXPIRE sets the TTL, never adds to it, and a lease that ran out is never re-created.
local lease_ms = tonumber(ARGV[1])
local now_ms = server_now()
local held = {}
for i = 1, (#ARGV - 1) / 3 do
  local a = 1 + 3 * (i - 1)
  local job = fetch(ARGV[a + 1], job_keys(i))
  if owns(job, ARGV[a + 2], tonumber(ARGV[a + 3])) and job.lease == token(job)
      and job.lease_until > now_ms then
    redis.call('PEXPIRE', job.lease_key, fmt(lease_ms))
    job.lease_until = now_ms + lease_ms
    store(job)
    held[i] = 1
  else
    held[i] = 0
  end
end
return {held, corrupt}
