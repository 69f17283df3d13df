-- Read new entries of several stages (or models), each with one stream per priority (high,
-- normal, low: keys.stage_streams), sharing each stage's `count` among its priorities by quotas
-- (shared/priority.py, Share.plan): first up to each priority's quota, then what is left of
-- `count`, high first, from the priorities that had their quota's worth. Never blocks (a script
-- cannot): the caller blocks with XREADGROUP when nothing came. The streams and the group must
-- exist (Store.ensure_groups).
-- KEYS: per stage its 3 streams, high first. ARGV: 1 group, 2 consumer, 3 count per stage,
--       then per stage its 3 quotas (in KEYS order)
-- Returns {{stream key, {{id, {field, value, ...}}...}}...} as XREADGROUP does (streams with
-- nothing left out), then {taken per stream, in KEYS order}.

local out, taken = {}, {}
local function read(k, n)
  if n <= 0 then return 0 end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[k], '>')
  if not r or not r[1] then return 0 end
  if type(r[1]) ~= 'table' then r = {r} end  -- fakeredis (unit tests) answers {key, entries} bare
  out[#out + 1] = r[1]
  return #r[1][2]
end
local count = tonumber(ARGV[3])
for s = 0, #KEYS / 3 - 1 do
  local got = 0
  for p = 1, 3 do
    local k = 3 * s + p
    local quota = tonumber(ARGV[3 + k])
    taken[k] = read(k, quota)
    got = got + taken[k]
  end
  for p = 1, 3 do
    local k = 3 * s + p
    if got >= count then break end
    if taken[k] >= tonumber(ARGV[3 + k]) then
      local more = read(k, count - got)
      taken[k] = taken[k] + more
      got = got + more
    end
  end
end
return {out, taken}
