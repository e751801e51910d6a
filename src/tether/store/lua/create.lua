-- Create a stream, or a fork of one; answers {OK, created (1|0), metadata} or {status, arg}.
-- ARGV: 3 path, 4 content type ('' = none given), 5 its media type, 6 json flag,
-- 7 ttl, 8 expires-at, 9 closed, 10 fork source ('' = none), 11 fork offset
-- ('' = the source's tail), 12 sub-offset, 13.. initial messages.

local path, ct, mt, json = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl_s, exp_s, closed = ARGV[7], ARGV[8], ARGV[9] == '1'
local fork_from, fork_offset_s, sub = ARGV[10], ARGV[11], tonumber(ARGV[12])
local msgs = {}
for i = 13, #ARGV do msgs[#msgs + 1] = ARGV[i] end

local source, start = nil, 0
if fork_from ~= '' then
  local err
  source, err = live(fork_from)
  if not source then
    if err == GONE then return {CONFLICT, 'cannot fork a deleted stream: ' .. fork_from} end
    return {NOT_FOUND, fork_from}
  end
  local offset = source.tail
  if fork_offset_s ~= '' then offset = tonumber(fork_offset_s) end
  if offset > source.tail then
    return {BAD_REQUEST, 'fork offset is beyond the end of the source stream'}
  end
  if sub > 0 then
    local ext = extent(source, offset)
    if not ext or offset + sub > ext[2] then
      return {BAD_REQUEST, 'fork sub-offset reaches past the end of the append it points into'}
    end
  end
  start = offset + sub
end
if ct == '' then
  if source then
    ct, mt, json = source.ct, source.mt, source.json and '1' or '0'
  else
    ct, mt, json = '@DEFAULT_CT@', '@DEFAULT_CT@', '0'
  end
end
if source and mt ~= source.mt then
  return {CONFLICT, "a fork must have its source's content type"}
end
msgs = kept(json == '1', msgs)
if source and ttl_s == '' and exp_s == '' then
  ttl_s, exp_s = source.ttl_s or '', source.exp_s or ''
end

local existing_id = redis.call('HGET', PATHS, path)
local ex = existing_id and load(existing_id)
if ex then
  if ex.soft then
    return {CONFLICT, 'stream was deleted but forks still use its path: ' .. path}
  end
  local e = expiry(ex)
  if e and now >= e then
    remove(ex)
    if ex.refs > 0 then
      return {CONFLICT, 'stream expired but forks still use its path: ' .. path}
    end
    ex = nil
  end
end
if ex then
  local same = ex.mt == mt and num(ex.ttl_s) == num(ttl_s) and num(ex.exp_s) == num(exp_s)
  if same and source then
    same = ex.fork_of == source.id and (fork_offset_s == '' or ex.fork_off == start)
  end
  if not same then
    return {CONFLICT, 'stream already exists with a different configuration: ' .. path}
  end
  return {OK, 0, ex.raw}
end

local id = int(redis.call('INCR', P .. 'nextid'))
local tail = add_rows(id, json == '1', start, msgs)
local h = {'id', id, 'path', path, 'ct', ct, 'mt', mt, 'json', json, 'created', NOW,
           'tail', int(tail), 'closed', closed and '1' or '0', 'acc', NOW,
           'fork_off', int(start), 'soft', '0', 'refs', '0'}
if ttl_s ~= '' then h[#h + 1] = 'ttl'; h[#h + 1] = ttl_s end
if exp_s ~= '' then h[#h + 1] = 'exp'; h[#h + 1] = exp_s end
if source then
  h[#h + 1] = 'fork_of'; h[#h + 1] = source.id
  redis.call('HINCRBY', skey(source.id), 'refs', 1)
end
redis.call('HSET', skey(id), unpack(h))
redis.call('HSET', PATHS, path, id)
index_expiry({ttl = num(ttl_s), exp = num(exp_s), acc = now, id = id})
return {OK, 1, redis.call('HGETALL', skey(id))}
