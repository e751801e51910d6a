-- An index is a sorted set ordered by its members' bytes (KEYS[1]: the key, a NUL,
-- the member; score 0) and a hash member -> key (KEYS[2]) to find the entry a put
-- moves or a remove deletes.
-- Put (or move) a member. ARGV: member, key.

local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then redis.call('ZREM', KEYS[1], old .. '\0' .. ARGV[1]) end
redis.call('ZADD', KEYS[1], 0, ARGV[2] .. '\0' .. ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
