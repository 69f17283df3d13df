-- A fragment (a Lua function): record the attempt in flight, begun at `started` (ms), as INTERRUPTED (KEYS: 1 delivery,
-- 2 attempts).

local function push_interrupted(started)
  redis.call('RPUSH', KEYS[2], '{"at":' .. started .. ',"status_code":null,"duration_ms":null,' ..
             '"error":${WEBHOOK_INTERRUPTED}}')
  redis.call('LTRIM', KEYS[2], -${WEBHOOK_ATTEMPTS_KEPT}, -1)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HINCRBY', KEYS[1], 'tries', 1)
end
