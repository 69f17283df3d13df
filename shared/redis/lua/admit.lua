-- Admission control: grant a new job of a pipeline its place, or refuse it, atomically. The
-- backlog is the counter (items accepted and not finished) plus the grants still open (taken
-- by requests whose job is not written yet: members `<id>:<items>[:<bytes>]` scored by when
-- they lapse, so a request that dies between grant and write frees its place by itself).
-- Refused when the backlog is at or over the cap: a job admitted just under the cap may take
-- it over by at most its own items, never more (no two requests see the same room).
-- Optionally the byte budget as well (DLPIPE_MAX_BACKLOG_BYTES, one for all pipelines: Redis's
-- memory is one pool): its bytes held (keys.BYTES `held`: the stored inputs of the jobs not
-- ended) plus its open grants (keys.BYTE_GRANTS, the same members, summed by their bytes),
-- refused at or over the byte cap in the same way (overshoot: at most the job's own bytes).
-- The job's MULTI (shared/jobs.py) removes the member from both sets as it counts the job.
-- KEYS: 1 backlog counter, 2 grants sorted set; optionally 3 keys.BYTES, 4 keys.BYTE_GRANTS
-- ARGV: 1 now ms, 2 grant life ms, 3 cap, 4 grant id, 5 the job's items; with the byte keys
--       6 the byte cap, 7 the job's bytes
-- Returns {1, backlog before it} granted, {0, backlog} refused; with the byte keys a third
-- element, the bytes held before it (counter + open byte grants).

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local backlog = math.max(0, tonumber(redis.call('GET', KEYS[1]) or '0'))
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  backlog = backlog + tonumber(string.match(member, '^[^:]*:(%d+)') or '0')
end
local reply = {1, backlog}
if backlog >= tonumber(ARGV[3]) then reply[1] = 0 end
local member = ARGV[4] .. ':' .. ARGV[5]
if #KEYS > 2 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[1])
  local held = math.max(0, tonumber(redis.call('HGET', KEYS[3], 'held') or '0'))
  for _, grant in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    held = held + tonumber(string.match(grant, ':(%d+)$') or '0')
  end
  reply[3] = held
  if held >= tonumber(ARGV[6]) then reply[1] = 0 end
  member = member .. ':' .. ARGV[7]
end
if reply[1] == 0 then return reply end
local lapse = tonumber(ARGV[1]) + tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], lapse, member)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if #KEYS > 2 then
  redis.call('ZADD', KEYS[4], lapse, member)
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
return reply
