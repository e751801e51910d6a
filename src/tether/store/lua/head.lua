-- A stream's metadata, without renewing a sliding TTL: {OK, metadata}.
-- ARGV: 3 path.

local m, err = live(ARGV[3])
if not m then return {err, ARGV[3]} end
return {OK, m.raw}
