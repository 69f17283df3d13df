-- Claim entries of a consumer group for one consumer, each with the number of times it
-- was delivered before, counting this claim as one more delivery. Either (ARGV[4] not
-- '') the next entries idle for at least ARGV[3] ms from any consumer (XAUTOCLAIM from
-- cursor ARGV[4], at most ARGV[5]), or (ARGV[4] == '') the ids ARGV[6..] that are still
-- pending for this very consumer. JUSTID first, so an entry deleted from the stream while
-- pending is seen in Redis 6.2 too (without it 6.2 answers a nil in place of the entry,
-- id unknown); deleted entries are acknowledged (7.x drops them from the PEL itself and
-- lists them in XAUTOCLAIM's third element).
--
-- KEYS: 1 stream. ARGV: 1 group, 2 consumer, 3 min idle ms, 4 cursor or '', 5 count, 6.. ids
-- Returns {next cursor ('0-0': the scan is done), {{id, deliveries before, fields}...}, {deleted id...}}

local ids, cursor, deleted = {}, '0-0', {}
if ARGV[4] ~= '' then
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5], 'JUSTID')
  cursor, ids = r[1], r[2]
  for _, id in ipairs(r[3] or {}) do deleted[#deleted + 1] = id end
else
  for i = 6, #ARGV do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    if p[1] and p[1][2] == ARGV[2] then ids[#ids + 1] = ARGV[i] end
  end
end
local claimed = {}
for _, id in ipairs(ids) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local before = 0
  if p[1] then before = tonumber(p[1][4]) end
  local e = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  if e[1] then
    claimed[#claimed + 1] = {id, before, e[1][2]}
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
    deleted[#deleted + 1] = id
  end
end
return {cursor, claimed, deleted}
