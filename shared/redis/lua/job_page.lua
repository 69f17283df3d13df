-- One page of an index set, newest first, with the rows' summaries, in one step.
-- KEYS: 1 the index set. ARGV: 1 cursor member ('' from the start), 2 cursor score, 3 limit,
--       4 most members to look at, 5 status the rows must have ('' any), 6 job key prefix
--       (keys.job('')), 7 scores below this are dropped first (nothing so old exists)
-- Returns {rows, next cursor member or '', its score}; a row is {id, pipeline, status, done,
-- total, created_at, completed_at, metadata} (false where a field is missing). Members whose
-- record is gone leave the set.

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[7])
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  if rank then
    start = rank + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[2], '+inf')
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])) do
      if m > ARGV[1] then start = start + 1 end
    end
  end
end
local rows, gone, looked = {}, {}, 0
local last, last_score = '', ''
local total = redis.call('ZCARD', KEYS[1])
while #rows < limit and looked < budget and start < total do
  local n = math.min(limit - #rows + 8, budget - looked)
  local found = redis.call('ZREVRANGE', KEYS[1], start, start + n - 1, 'WITHSCORES')
  if #found == 0 then break end
  for i = 1, #found, 2 do
    local id = found[i]
    looked = looked + 1
    start = start + 1
    last, last_score = id, found[i + 1]
    local f = redis.call('HMGET', ARGV[6] .. id, 'id', 'pipeline', 'status', 'done', 'total',
                         'created_at', 'completed_at', 'metadata')
    if not f[3] then
      gone[#gone + 1] = id
    elseif ARGV[5] == '' or f[3] == ARGV[5] then
      rows[#rows + 1] = f
    end
    if #rows >= limit or looked >= budget then break end
  end
end
for _, id in ipairs(gone) do redis.call('ZREM', KEYS[1], id) end
if start >= total then last, last_score = '', '' end
return {rows, last, last_score}
