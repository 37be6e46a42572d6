local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local out = {}
for i = 1, #KEYS - 1 do
  local old = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, 1000)
  for _, m in ipairs(old) do
    redis.call('ZREM', KEYS[i], m)
    redis.call('HDEL', KEYS[#KEYS], m)
  end
  out[#out+1] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
end
return out
