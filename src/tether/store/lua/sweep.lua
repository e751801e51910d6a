-- Expire the streams whose time is up, a batch at a time. Answers {expired, looked at}.
-- ARGV: 3 how many streams to look at.

local ids = redis.call('ZRANGEBYSCORE', EXP, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
for _, id in ipairs(ids) do
  local m = load(id)
  if not m or m.soft then
    redis.call('ZREM', EXP, id)
  else
    local e = expiry(m)
    if e and now >= e then
      remove(m)
      n = n + 1
    elseif e then
      redis.call('ZADD', EXP, flt(e), id)
    else
      redis.call('ZREM', EXP, id)
    end
  end
end
return {n, #ids}
