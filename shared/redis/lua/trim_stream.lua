-- Trim a stream of the entries every consumer group is done with: XTRIM MINID to the
-- lowest of, over every group, its oldest pending entry and its last-delivered id (entries
-- after it are not read yet; the last-delivered one itself is kept, which costs one entry
-- and needs no id arithmetic). A stream with no group is left alone: nobody has read it
-- yet. One script, so no entry can be delivered or acknowledged between the look and the
-- trim; what is added meanwhile has a higher id than the floor. Works on Redis 6.2 and 7.x.
--
-- KEYS: 1 stream. Returns {floor id ('' when nothing was trimmed), entries removed}

if redis.call('EXISTS', KEYS[1]) == 0 then return {'', 0} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function lower(a, b)
  if a == nil then return b end
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  if bms < ams or (bms == ams and bseq < aseq) then return b end
  return a
end
local floor = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  floor = lower(floor, info['last-delivered-id'])
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    if summary[2] then floor = lower(floor, summary[2]) end
  end
end
if floor == nil then return {'', 0} end
return {floor, redis.call('XTRIM', KEYS[1], 'MINID', floor)}
