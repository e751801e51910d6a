-- Read from an offset; answers {OK, metadata, next, up to date, closed, chunks}.
-- Renews a sliding TTL.
-- ARGV: 3 path, 4 offset ('' = the tail), 5 max bytes.

local path, offset_s, budget = ARGV[3], ARGV[4], tonumber(ARGV[5])
local m, err = live(path)
if not m then return {err, path} end
if m.ttl then
  redis.call('HSET', skey(m.id), 'acc', NOW)
  if not m.exp then redis.call('ZADD', EXP, flt(now + m.ttl), m.id) end
  m.raw = redis.call('HGETALL', skey(m.id))
end
local closed = m.closed and 1 or 0
if offset_s == '' then return {OK, m.raw, int(m.tail), 1, closed, {}} end
local pos = tonumber(offset_s)
if pos > m.tail then return {BAD_REQUEST, 'offset is beyond the end of the stream'} end

local chunks = {}
for _, seg in ipairs(segments(m)) do
  local sid, lo, hi = seg[1], seg[2], seg[3]
  if hi > pos then
    local from = math.max(pos, lo)
    local batch = {}
    local r = row_at(sid, from)
    if r then batch[1] = r end
    local next_start = from + 1
    local i = 1
    while budget > 0 and pos < hi do
      if i > #batch then
        if next_start > hi - 1 then break end
        local entries = redis.call('XRANGE', dkey(sid), int(next_start) .. '-1',
                                   int(hi - 1) .. '-1', 'COUNT', 256)
        if #entries == 0 then break end
        batch, i = {}, 1
        for j, entry in ipairs(entries) do batch[j] = row(entry) end
        next_start = batch[#batch].s + 1
      end
      r = batch[i]
      i = i + 1
      local s, e, d = r.s, r.e, r.d
      if e > hi then
        d = string.sub(d, 1, hi - s)
        e = hi
      end
      if s < pos then d = string.sub(d, pos - s + 1) end
      chunks[#chunks + 1] = d
      budget = budget - #d
      pos = e
    end
  end
  if budget <= 0 then break end
end
local up = pos >= m.tail
return {OK, m.raw, int(pos), up and 1 or 0, (up and m.closed) and 1 or 0, chunks}
