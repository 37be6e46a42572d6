if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
if n > 0 and redis.call('LINDEX', KEYS[2], n - 1) == ARGV[3] then redis.call('LTRIM', KEYS[2], n, -1) end
return 1
