-- A job's state and its event stream's end, read at one instant. With a resume id (ARGV[1]) whose
-- entry is still in the stream (nothing after it was trimmed), of a job with no groups: the entries
-- after it and their items' outputs instead of every output.
-- KEYS: 1 job hash, 2 outputs hash, 3 event stream. ARGV: 1 resume id or ''
-- Returns {job fields, outputs (flat), last id ('0-0': none), resumed (0/1), entries, their outputs}

local job = redis.call('HGETALL', KEYS[1])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if last[1] then last_id = last[1][1] end
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], 'groups') == 0
   and #redis.call('XRANGE', KEYS[3], ARGV[1], ARGV[1]) == 1 then
  local entries = redis.call('XRANGE', KEYS[3], '(' .. ARGV[1], '+')
  local indices = {}
  for _, e in ipairs(entries) do
    local f = e[2]
    for i = 1, #f, 2 do if f[i] == 'i' then indices[#indices + 1] = f[i + 1] end end
  end
  local outputs = {}
  if #indices > 0 then outputs = redis.call('HMGET', KEYS[2], unpack(indices)) end
  return {job, {}, last_id, 1, entries, outputs}
end
return {job, redis.call('HGETALL', KEYS[2]), last_id, 0, {}, {}}
