-- Read a job's (or a delivery's) keys in one atomic step that still works while Redis is over
-- its maxmemory (noeviction): a MULTI is then refused whole, reads and all (Redis refuses to
-- queue any command past maxmemory), a script's reads are not. HGETALL of each hash, then
-- LRANGE 0 -1 of each list (services/api/redis_memory.py).
-- KEYS: the hashes, then the lists. ARGV: 1 how many hashes
-- Returns one reply per key: {field, value, ...} for a hash, {item, ...} for a list.

local out = {}
for k = 1, #KEYS do
  if k <= tonumber(ARGV[1]) then
    out[k] = redis.call('HGETALL', KEYS[k])
  else
    out[k] = redis.call('LRANGE', KEYS[k], 0, -1)
  end
end
return out
