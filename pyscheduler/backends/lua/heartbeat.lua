-- heartbeat: the group's live instances, one record per started scheduler.
-- KEYS: common layout, then KEYS[4] the instances zset (instance id scored by its record's
--   expiry, epoch ms), KEYS[5] the group's change counters (see bump_epoch): ``members``
--   is increased whenever an id joins or leaves the zset
-- ARGV: mode, the record key prefix ('{pfx}:instance:'), then per mode:
--   'beat'  id, ttl_ms, the record as a JSON object (without last_heartbeat_ms): upsert it,
--           drop the expired records, list the live ones
--   'list'  nothing: list the live ones, writing nothing
--   'leave' id: remove that record
-- Returns {{now_ms, live}, corrupt}: live is id, record, id, record ... of the records that
-- expire after now_ms (zset order; the caller sorts and parses them), corrupt is id, reason,
-- ... of the values skipped for not being of our form ('' for the zset itself).
-- Record keys are derived here from the zset's members: the {pfx} hash tag keeps them in
-- the zset's Cluster slot. The zset decides liveness; a record's PX TTL (the same expiry)
-- only makes sure a dead instance's record goes away even if nobody heartbeats again.
local INSTANCES, EPOCH = KEYS[4], KEYS[5]
local changed = false
local mode, prefix = ARGV[1], ARGV[2]
local now_ms = server_now()

local kind = redis.call('TYPE', INSTANCES)['ok']
if kind ~= 'zset' and kind ~= 'none' then
  corrupt[#corrupt + 1] = ''
  corrupt[#corrupt + 1] = 'the instances key holds a ' .. kind .. ', not a zset'
  if mode == 'list' then return {{fmt(now_ms), {}}, corrupt} end
  -- Membership is rebuilt by the next heartbeat of every instance: nothing else is lost.
  redis.call('DEL', INSTANCES)
  changed = true
end

if mode == 'leave' then
  if redis.call('ZREM', INSTANCES, ARGV[3]) == 1 then changed = true end
  redis.call('DEL', prefix .. ARGV[3])
  if changed then bump_epoch(EPOCH, 'members') end
  return {{fmt(now_ms), {}}, corrupt}
end

if mode == 'beat' then
  local id, ttl_ms, info = ARGV[3], tonumber(ARGV[4]), ARGV[5]
  if ttl_ms == nil or ttl_ms < 1 or string.sub(info, 1, 1) ~= '{' or #info < 3 then
    return redis.error_reply('heartbeat: bad arguments')
  end
  -- The backend's clock goes in first; the caller never sends that field.
  local value = '{"last_heartbeat_ms":' .. fmt(now_ms) .. ',' .. string.sub(info, 2)
  redis.call('SET', prefix .. id, value, 'PX', fmt(ttl_ms))
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', INSTANCES, '-inf', fmt(now_ms))) do
    redis.call('ZREM', INSTANCES, gone)
    redis.call('DEL', prefix .. gone)
    changed = true
  end
  if redis.call('ZADD', INSTANCES, fmt(now_ms + ttl_ms), id) == 1 then changed = true end
end

local live = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', INSTANCES, '(' .. fmt(now_ms), '+inf')) do
  local value = redis.pcall('GET', prefix .. id)
  if type(value) == 'table' then  -- an error reply: the key holds another type
    corrupt[#corrupt + 1] = id
    corrupt[#corrupt + 1] = 'the record key holds a ' .. redis.call('TYPE', prefix .. id)['ok']
  elseif value then
    live[#live + 1] = id
    live[#live + 1] = value
  elseif mode == 'beat' then
    redis.call('ZREM', INSTANCES, id)  -- its record was deleted: not live any more
    changed = true
  end
end
if changed then bump_epoch(EPOCH, 'members') end
return {{fmt(now_ms), live}, corrupt}
