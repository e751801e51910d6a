-- Append (and/or close); answers {OK, tail, closed, appended[, epoch, seq]} or {status, ...}.
-- ARGV: 3 path, 4 has content type, 5 its media type, 6 has Stream-Seq, 7 Stream-Seq,
-- 8 has producer, 9 producer id, 10 epoch, 11 seq, 12 close, 13 lease name ('' = none),
-- 14 lease owner, 15.. messages.

local path, has_ct, req_mt = ARGV[3], ARGV[4] == '1', ARGV[5]
local has_seq, seq = ARGV[6] == '1', ARGV[7]
local has_p, pid, pe, ps = ARGV[8] == '1', ARGV[9], ARGV[10], ARGV[11]
local close = ARGV[12] == '1'
local lease, lease_owner = ARGV[13], ARGV[14]
local msgs = {}
for i = 15, #ARGV do msgs[#msgs + 1] = ARGV[i] end
if lease ~= '' and redis.call('GET', P .. 'l:' .. lease) ~= lease_owner then
  return {LEASE_LOST, lease}
end

local m, err = live(path)
if not m then return {err, path} end
msgs = kept(m.json, msgs)
if #msgs > 0 and has_ct and req_mt ~= m.mt then return {CT_MISMATCH, m.ct} end
if has_p then
  local state = redis.call('HGET', pkey(m.id), pid)
  local ep, sq = tonumber(pe), tonumber(ps)
  if state then
    local e_s, l_s = string.match(state, '^(%d+):(%d+)$')
    local epoch, last = tonumber(e_s), tonumber(l_s)
    if ep < epoch then return {STALE_EPOCH, e_s} end
    if ep == epoch and sq <= last then
      return {OK, int(m.tail), m.closed and 1 or 0, 0, e_s, l_s}
    end
    if ep > epoch and sq ~= 0 then
      return {BAD_REQUEST, 'a new producer epoch must start at sequence 0'}
    end
    if ep == epoch and sq ~= last + 1 then return {SEQ_GAP, int(last + 1), ps} end
  elseif sq ~= 0 then
    return {SEQ_GAP, '0', ps}
  end
end
if m.closed then
  if #msgs == 0 and not has_p then return {OK, int(m.tail), 1, 1} end
  return {CLOSED, int(m.tail)}
end
if has_seq and m.last_seq and not bytes_gt(seq, m.last_seq) then
  return {SEQ_CONFLICT, m.last_seq}
end
if #msgs == 0 and not close then
  return {BAD_REQUEST, 'an append needs a non-empty body or Stream-Closed: true'}
end

local old = m.tail
local tail, chunks = add_rows(m.id, m.json, old, msgs)
local h = {'tail', int(tail), 'acc', NOW}
if close then
  h[#h + 1] = 'closed'; h[#h + 1] = '1'
  if has_p then
    h[#h + 1] = 'cb'; h[#h + 1] = pid
    h[#h + 1] = 'cb_epoch'; h[#h + 1] = pe
    h[#h + 1] = 'cb_seq'; h[#h + 1] = ps
  end
end
if has_seq then h[#h + 1] = 'last_seq'; h[#h + 1] = seq end
redis.call('HSET', skey(m.id), unpack(h))
if has_p then redis.call('HSET', pkey(m.id), pid, pe .. ':' .. ps) end
if m.ttl and not m.exp then redis.call('ZADD', EXP, flt(now + m.ttl), m.id) end
notify('a', m, old, tail, close, chunks)
if has_p then return {OK, int(tail), close and 1 or 0, 1, pe, ps} end
return {OK, int(tail), close and 1 or 0, 1}
