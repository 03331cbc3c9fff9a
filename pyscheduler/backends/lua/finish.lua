-- finish: record each attempt's outcome if its token and fence still own the occurrence.
-- KEYS: common layout, one (job, lease) pair per outcome
-- ARGV: per outcome 7 values: name, owner, fence, succeeded (0/1), error, duration (seconds,
--       a decimal string), retry_delay_ms ('' = settle the occurrence)
-- Returns {states, corrupt}: states[i] is the job's new state (state_reply, without its
-- description), or 0 if the
-- outcome is stale (then nothing was written).
local now_ms = server_now()
local states = {}
for i = 1, #ARGV / 7 do
  local a = 7 * (i - 1)
  local job = fetch(ARGV[a + 1], job_keys(i))
  if owns(job, ARGV[a + 2], tonumber(ARGV[a + 3])) then
    local succeeded, err, retry_delay = ARGV[a + 4] == '1', ARGV[a + 5], opt_int(ARGV[a + 7])
    release(job)
    job.run_count = job.run_count + 1
    job.last_run, job.last_duration = job.claimed_at, ARGV[a + 6]
    if succeeded then
      settle(job, true, '', now_ms)
    else
      job.last_error = err
      if retry_delay ~= nil then
        job.status, job.retry_at = 'retry_wait', now_ms + math.max(0, retry_delay)
      else
        settle(job, false, err, now_ms)
      end
    end
    store(job)
    states[i] = stored_reply(job)
  else
    states[i] = 0
  end
end
return {states, corrupt}
