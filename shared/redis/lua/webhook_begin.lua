-- An attempt starts. KEYS: 1 delivery, 2 attempts, 3 job's webhook index. ARGV: 1 round, 2 now, 3 ttl.
-- An attempt found in flight was cut short (its notifier died and rq ran the job again): it is
-- recorded as such.
-- Returns {'gone'} | {'stale'} (another round now) | {'done', state} |
-- {'go', attempts before this one in this round, job id, event, event at, gone reason or ''}.
--! include webhook_push_interrupted


if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
local d = redis.call('HMGET', KEYS[1], 'round', 'state', 'started_at', 'job', 'event', 'event_at')
if d[1] ~= ARGV[1] then return {'stale'} end
if d[2] == 'succeeded' or d[2] == 'dead' then return {'done', d[2]} end
if d[2] == 'delivering' and d[3] then
  push_interrupted(d[3])
end
redis.call('HSET', KEYS[1], 'state', 'delivering', 'started_at', ARGV[2], 'next_attempt_at', '')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local gone = redis.call('HGET', KEYS[3], 'gone') or ''
return {'go', tonumber(redis.call('HGET', KEYS[1], 'tries')), d[4], d[5], d[6] or '', gone}
