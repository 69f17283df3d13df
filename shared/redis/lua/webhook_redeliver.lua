-- Send a delivery again (the API). KEYS: 1 delivery, 2 job's webhook index, 3 events stream,
-- 4 the job's redelivery allowance (keys.webhook_redelivered). ARGV: 1 now, 2 ttl, 3 job id,
-- 4 delivery id, 5 least time between two redeliveries of the job (ms; 0: no limit).
-- Returns {1, round} | {0, state} while in flight | {-1} no such delivery | {-2, ms left} too soon
-- after the last redelivery. Only a redelivery made takes the allowance (a refusal leaves it), and
-- `too soon` comes before `in flight`: calls on the heels of one that was made all hear when to
-- come back, whatever the notifier has done with it meanwhile (a receiver answering 410 makes
-- the delivery dead again at once: without the allowance, every call would be one more POST).

if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local left = redis.call('PTTL', KEYS[4])
if left > 0 then return {-2, left} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' or state == 'delivering' or state == 'failed' then return {0, state} end
local round = redis.call('HINCRBY', KEYS[1], 'round', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'tries', 0, 'next_attempt_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], 'gone')
redis.call('XADD', KEYS[3], '*', 'job', ARGV[3], 'type', '${WEBHOOK_REDELIVER_EVENT}', 'delivery', ARGV[4],
           'round', round, 'at', ARGV[1])
if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], round, 'PX', ARGV[5]) end
return {1, round}
