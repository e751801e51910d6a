-- Delete a stream (soft while forks read through it): {OK}.
-- ARGV: 3 path.

local m, err = live(ARGV[3])
if not m then return {err, ARGV[3]} end
remove(m)
return {OK}
