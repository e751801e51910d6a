-- Remove a member from an index (see index_put.lua). ARGV: member.

local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  redis.call('ZREM', KEYS[1], old .. '\0' .. ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
