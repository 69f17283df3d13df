-- Move a job between the status sets of its index (keys.job_index): from `from` to `to`. A job
-- with no `ix` in its hash is not indexed: nothing to do.

local function reindex(job, id, from, to)
  local f = redis.call('HMGET', job, 'ix', 'created_at', 'pipeline')
  if not f[1] then return end
  for _, scope in ipairs({f[1], f[1] .. '|p=' .. f[3]}) do
    redis.call('ZREM', scope .. '|s=' .. from, id)
    redis.call('ZADD', scope .. '|s=' .. to, f[2], id)
  end
end
