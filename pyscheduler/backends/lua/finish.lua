-- finish: record each attempt's outcome if its token and fence still own the occurrence.
-- KEYS: common layout, one (job, lease) pair per outcome
-- ARGV: the outcomes as a JSON array of arrays (see finish_outcomes in common.lua), then the
--       run-history arguments (see history_args in common.lua)
-- Returns {states, corrupt}: states[i] is the job's new state (stored_reply, without its
-- description), or 0 if the outcome is stale (then nothing was written).
local now_ms, now_us = server_now()
return {finish_outcomes(cjson.decode(ARGV[1]), 0, now_ms, history_args(2, now_us)), corrupt}
