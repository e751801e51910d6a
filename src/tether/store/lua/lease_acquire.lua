-- Take a lease if it is free or already ours. KEYS[1] the lease; ARGV: owner, ttl in ms.
-- PX expiry runs on Redis's clock, so every replica agrees on when a lease lapses.

local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
