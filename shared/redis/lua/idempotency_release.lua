-- Delete a claim only while it is still the pending claim this request made.
-- KEYS: 1 the idempotency key (keys.idempotency). ARGV: 1 the claim this request made.
-- Returns 1 when deleted, else 0.

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
