if redis.call('HEXISTS', KEYS[1], 'data') == 1 then
  if redis.call('HGET', KEYS[1], 'wid') == ARGV[9] then
    -- This install, retried: its lease's fence, if the lease still holds the lock.
    if ARGV[8] == '' then return {0, 0, ixDirty(KEYS[1])} end
    if redis.call('GET', KEYS[5]) ~= ARGV[8] then return {3, 0, ixDirty(KEYS[1])} end
    return {0, tonumber(redis.call('GET', KEYS[6]) or '0'), ixDirty(KEYS[1])}
  end
  return {1, 0, ixDirty(KEYS[1])}
end
if ARGV[8] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[8] then return {3, 0, ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = 0
local exp = '0'
if ARGV[5] == '1' then
  ttl = tonumber(ARGV[6]) + tonumber(ARGV[7]) - now
  if ttl <= 0 then return {2, 0, ''} end
  exp = string.format('%d', now + ttl)
end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'version', ARGV[2], 'fence', ARGV[3], 'wid', ARGV[9],
  'st', ARGV[4], 'ix', ARGV[4] .. '|' .. exp .. '|' .. t[1] .. string.format('%06d', tonumber(t[2])))
local i = 10
local n = tonumber(ARGV[i])
for j = 1, n do
  local id = ARGV[i+j]
  redis.call('ZADD', KEYS[2], now, id)
  if redis.call('ZREM', KEYS[3], id) == 1 then redis.call('HDEL', KEYS[4], id) end
end
i = i + n + 1
park(KEYS[3], KEYS[4], i)
local floor = tonumber(ARGV[3])
local f = tonumber(redis.call('GET', KEYS[6]) or '0')
if f < floor then f = floor end
local fence = 0
if ARGV[8] ~= '' then
  f = f + 1
  fence = f
end
redis.call('SET', KEYS[6], f)
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[6]}) do
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
end
return {0, fence, ixDirty(KEYS[1])}
