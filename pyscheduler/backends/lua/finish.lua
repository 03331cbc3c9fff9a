-- finish: record each attempt's outcome if its token and fence still own the occurrence.
-- KEYS: common layout, one (job, lease) pair per outcome
-- ARGV: the outcomes as a JSON array of arrays of 7 values: name, owner, fence, succeeded
--       (0/1), error, duration (seconds, a decimal string), retry_delay_ms ('' = settle the
--       occurrence)
-- Returns {states, corrupt}: states[i] is the job's new state (stored_reply, without its
-- description), or 0 if the outcome is stale (then nothing was written).
local now_ms = server_now()
local states = {}
for i, o in ipairs(cjson.decode(ARGV[1])) do
  local job = fetch(o[1], job_keys(i))
  if owns(job, o[2], tonumber(o[3])) then
    local succeeded, err, retry_delay = tonumber(o[4]) == 1, o[5], opt_int(o[7])
    release(job)
    job.run_count = job.run_count + 1
    job.last_run, job.last_duration = job.claimed_at, o[6]
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
