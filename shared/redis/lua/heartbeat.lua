-- KEYS: 1 keys.WORKERS, 2 keys.worker(id). ARGV: 1 worker id, 2 now ms, 3 ttl ms, 4 kind,
-- 5 streams (comma-joined), 6 pid, 7 host. Forgets workers dead for 10 TTLs (keeps the set small).

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - 10 * tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], 'kind', ARGV[4], 'streams', ARGV[5], 'pid', ARGV[6], 'host', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
