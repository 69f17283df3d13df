-- The byte budget (DLPIPE_MAX_BACKLOG_BYTES, keys.BYTES): a job that ends, however it ends
-- (COMPLETE_STAGE, CANCEL_JOB, EXPIRE_JOB), gives back its stored inputs' bytes (the job hash's
-- `bytes`, written with it by shared/jobs.py) in the step that ends it: `held` less them (never
-- below 0), `freed` plus them (its rate sets a byte refusal's Retry-After). Exactly once, as
-- the job ends once. Prepended to those scripts (a Lua function, defined before their body).

local function give_bytes_back(job, budget)
  local n = tonumber(redis.call('HGET', job, 'bytes') or '0')
  if n > 0 then
    if redis.call('HINCRBY', budget, 'held', -n) < 0 then redis.call('HSET', budget, 'held', 0) end
    redis.call('HINCRBY', budget, 'freed', n)
  end
end
