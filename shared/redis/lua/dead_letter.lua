-- Give up one stream entry that has no item to fail (a notifier event): acknowledge it
-- and copy it to the dead-letter stream, atomically.
-- KEYS: 1 stream, 2 dead-letter stream. ARGV: 1 group, 2 entry id, 3.. fields (name, value, ...)

local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3, #ARGV))
return 1
