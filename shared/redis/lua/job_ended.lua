-- Everything a job's end does besides its own script's work: the index (REINDEX), the kept
-- inputs (`kept` in the job hash: job .. ':inputs' is keys.job_inputs) given the job's TTL, the
-- `completed` entry of its event stream (events: keys.job_events, or false), and its latency
-- (now - created_at) in metrics.JOB_SECONDS (metrics: keys.METRICS, or false; not for canceled).
--! include reindex


local job_buckets = ${JOB_BUCKETS}
local function job_ended(job, id, from, to, now, ttl, events, metrics)
  reindex(job, id, from, to)
  if redis.call('HEXISTS', job, 'kept') == 1 then redis.call('EXPIRE', job .. ':inputs', ttl) end
  if events then
    redis.call('XADD', events, 'MAXLEN', '~', ${JOB_EVENTS_MAXLEN}, '*', 't', 'c', 's', to)
    redis.call('EXPIRE', events, ttl)
  end
  if metrics and to ~= '${JobStatus.canceled}' then
    local f = redis.call('HMGET', job, 'created_at', 'pipeline')
    local s = math.max(0, tonumber(now) - tonumber(f[1] or now)) / 1000
    local le = '+Inf'
    for _, b in ipairs(job_buckets) do
      if s <= b[1] then le = b[2] break end
    end
    redis.call('HINCRBY', metrics, 'job_s|' .. f[2] .. '|' .. le, 1)
    redis.call('HINCRBYFLOAT', metrics, 'job_s|' .. f[2] .. '|sum', s)
  end
end
