-- The start of the library of stream functions (create, append, read, head,
-- delete, sweep): the shared state and helpers, defined once when Redis loads
-- the library, not on every call. Each function calls begin(ARGV) first: ARGV[1]
-- is the key prefix and ARGV[2] the time ('' = Redis's clock); its own
-- arguments follow from ARGV[3]. Numbers go to Redis as strings formatted here:
-- Lua's default formatting keeps only 14 significant digits. @NAME@ placeholders
-- are filled in by redis_scripts.py when the library is built. The status codes
-- a function answers with (OK, NOT_FOUND, ...) are defined before this prelude,
-- from redis_scripts.Status.

-- The call's prefix and time, set by begin (Redis runs one function at a time).
local P, NOW, now, PATHS, EXP, CHANNEL
local INLINE_MAX = @INLINE_MAX@

local function begin(argv)
  P = argv[1]
  NOW = argv[2]
  if NOW == '' then
    local t = redis.call('TIME')
    NOW = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  end
  now = tonumber(NOW)
  PATHS, EXP, CHANNEL = P .. 'paths', P .. 'exp', P .. 'tail'
end

local function skey(id) return P .. 's:' .. id end
local function dkey(id) return P .. 'd:' .. id end
local function pkey(id) return P .. 'pr:' .. id end
local function int(n) return string.format('%d', n) end
local function flt(n) return string.format('%.17g', n) end
local function num(s) if s == nil or s == '' then return nil end return tonumber(s) end

local function load(id)
  local raw = redis.call('HGETALL', skey(id))
  if #raw == 0 then return nil end
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return {
    id = id, raw = raw, path = h.path, ct = h.ct, mt = h.mt, json = h.json == '1',
    tail = tonumber(h.tail), closed = h.closed == '1', ttl_s = h.ttl, exp_s = h.exp,
    ttl = num(h.ttl), exp = num(h.exp), acc = tonumber(h.acc), fork_of = h.fork_of,
    fork_off = tonumber(h.fork_off), last_seq = h.last_seq, soft = h.soft == '1',
    refs = tonumber(h.refs),
  }
end

local function expiry(m)
  if m.exp then return m.exp end
  if m.ttl then return m.acc + m.ttl end
  return nil
end

local function index_expiry(m)
  local e = expiry(m)
  if e then redis.call('ZADD', EXP, flt(e), m.id) end
end

-- Header line "kind id start end closed inline pathlen [len...]", then the path
-- and the chunks (when inline).
local function notify(kind, m, start, stop, closed, chunks)
  local total = 0
  for _, d in ipairs(chunks) do total = total + #d end
  local inline = total <= INLINE_MAX
  local head = {kind, m.id, int(start), int(stop), closed and '1' or '0',
                inline and '1' or '0', int(#m.path)}
  if inline then
    for _, d in ipairs(chunks) do head[#head + 1] = int(#d) end
  end
  local parts = {table.concat(head, ' '), '\n', m.path}
  if inline then
    for _, d in ipairs(chunks) do parts[#parts + 1] = d end
  end
  redis.call('PUBLISH', CHANNEL, table.concat(parts))
end

local function drop(m)
  redis.call('UNLINK', skey(m.id), dkey(m.id), pkey(m.id))
  redis.call('ZREM', EXP, m.id)
  if redis.call('HGET', PATHS, m.path) == m.id then redis.call('HDEL', PATHS, m.path) end
end

-- Delete or expire: soft while forks read through it, else for good, taking
-- along every soft-deleted source whose last fork this was.
local function remove(m)
  if m.refs > 0 then
    redis.call('HSET', skey(m.id), 'soft', '1')
    redis.call('ZREM', EXP, m.id)
  else
    drop(m)
    local cur = m
    while cur.fork_of do
      local src = load(cur.fork_of)
      if not src then break end
      if src.soft and src.refs <= 1 then
        drop(src)
        cur = src
      else
        redis.call('HINCRBY', skey(src.id), 'refs', -1)
        break
      end
    end
  end
  notify('d', m, m.tail, m.tail, m.closed, {})
end

-- The stream at path if it exists and has not expired; else nil and a status.
local function live(path)
  local id = redis.call('HGET', PATHS, path)
  if not id then return nil, NOT_FOUND end
  local m = load(id)
  if not m then return nil, NOT_FOUND end
  if m.soft then return nil, GONE end
  local e = expiry(m)
  if e and now >= e then
    remove(m)
    if m.refs > 0 then return nil, GONE end
    return nil, NOT_FOUND
  end
  return m
end

-- {stream id, lo, hi} pieces of a stream's positions, oldest first.
local function segments(m)
  local segs = {}
  local cap = m.tail
  local cur = m
  while true do
    local lo = 0
    if cur.fork_of then lo = cur.fork_off end
    local hi = math.min(cap, cur.tail)
    if lo < hi then table.insert(segs, 1, {cur.id, lo, hi}) end
    if not cur.fork_of then break end
    cap = math.min(cap, lo)
    local src = load(cur.fork_of)
    if not src then error('fork source ' .. cur.fork_of .. ' is missing from the log') end
    cur = src
  end
  return segs
end

-- Entry fields: e (end), b (start of its append), x (end of its append), d (data).
local function row(entry)
  local f = entry[2]
  return {s = tonumber(string.match(entry[1], '^(%d+)')), e = tonumber(f[2]),
          b = tonumber(f[4]), x = tonumber(f[6]), d = f[8]}
end

-- The row of stream sid that holds position pos, or nil.
local function row_at(sid, pos)
  local found = redis.call('XREVRANGE', dkey(sid), int(pos) .. '-1', '-', 'COUNT', 1)[1]
  if not found then return nil end
  local r = row(found)
  if r.e <= pos then return nil end
  return r
end

-- [start, end) of the append holding pos, as stream m sees it; nil if none.
local function extent(m, pos)
  for _, seg in ipairs(segments(m)) do
    if seg[2] <= pos and pos < seg[3] then
      local r = row_at(seg[1], pos)
      if not r then return nil end
      return {r.b, math.min(r.x, seg[3])}
    end
  end
  return nil
end

-- Write the rows of one append starting at start; returns the new tail and chunks.
local function add_rows(id, json, start, msgs)
  if #msgs == 0 then return start, {} end
  local k = dkey(id)
  if json then
    local stop = start + #msgs
    for i, d in ipairs(msgs) do
      local s = start + i - 1
      redis.call('XADD', k, int(s) .. '-1', 'e', int(s + 1), 'b', int(start), 'x', int(stop),
                 'd', d)
    end
    return stop, msgs
  end
  local d = table.concat(msgs)
  local stop = start + #d
  redis.call('XADD', k, int(start) .. '-1', 'e', int(stop), 'b', int(start), 'x', int(stop),
             'd', d)
  return stop, {d}
end

-- Empty byte chunks append nothing; JSON messages are kept as given (local.py).
local function kept(json, msgs)
  if json then return msgs end
  local out = {}
  for _, d in ipairs(msgs) do
    if #d > 0 then out[#out + 1] = d end
  end
  return out
end

-- Byte-wise a > b (Lua's own comparison follows the server's locale).
local function bytes_gt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
