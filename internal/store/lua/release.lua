local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then
  if v or redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
  return 1
end
local n = tonumber(ARGV[2])
if n > 0 and redis.call('LINDEX', KEYS[3], n - 1) == ARGV[3] then redis.call('LTRIM', KEYS[3], n, -1) end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
return 1
