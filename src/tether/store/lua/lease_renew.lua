-- Extend the owner's leases; answers the (1-based) indexes of those it no longer holds.
-- KEYS: the leases; ARGV: owner, ttl in ms.

local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  else
    lost[#lost + 1] = i
  end
end
return lost
