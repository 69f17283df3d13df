-- Mark a job running when a worker first takes one of its items (emitting job.started).
-- Its first write adds no memory (an HDEL of a field no job has), so that Redis over its
-- maxmemory lets the rest through: a worker must not stall on a full Redis (shared/redis_full.py).
-- It moves the job to the running sets of the job index (shared/job_index.py REINDEX).
-- KEYS[1] job hash, KEYS[2] events stream; ARGV[1] now (ms), ARGV[2] job id
--! include reindex


redis.call('HDEL', KEYS[1], '-')
if redis.call('HGET', KEYS[1], 'status') == '${JobStatus.queued}' then
  redis.call('HSET', KEYS[1], 'status', '${JobStatus.running}', 'started_at', ARGV[1])
  reindex(KEYS[1], ARGV[2], '${JobStatus.queued}', '${JobStatus.running}')
  local wants = redis.call('HGET', KEYS[1], 'webhook_events')
  if wants and string.find(wants, 'started', 1, true) then
    redis.call('XADD', KEYS[2], '*', 'job', ARGV[2], 'type', '${EventType.started}', 'at', ARGV[1])
  end
end
return 1
