-- interrupt: give up owned running occurrences so another instance recovers them at once.
-- KEYS: common layout, one (job, lease) pair per lease
-- ARGV: per lease 3 values: name, owner, fence
-- Returns {released, corrupt}: released[i] is 1 if the occurrence was ours, else 0.
local now_ms = server_now()
local released = {}
for i = 1, #ARGV / 3 do
  local a = 3 * (i - 1)
  local job = fetch(ARGV[a + 1], job_keys(i))
  if owns(job, ARGV[a + 2], tonumber(ARGV[a + 3])) then
    release(job)
    job.status, job.retry_at = 'interrupted', now_ms
    store(job)
    released[i] = 1
  else
    released[i] = 0
  end
end
return {released, corrupt}
