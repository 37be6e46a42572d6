local function head()
  if ARGV[11] == '1' then return inboxHead(KEYS[3], KEYS[4], INBOX_HEAD) end
  return {}
end
if redis.call('GET', KEYS[6]) ~= ARGV[1] then return {1, '', {}} end
local version = tonumber(ARGV[3])
if version > 0 and redis.call('HGET', KEYS[1], 'wid') == ARGV[#ARGV] then return {0, ixDirty(KEYS[1]), head()} end
if ARGV[8] ~= '' then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0)
  if first[1] ~= ARGV[8] then return {3, '', head()} end
end
local fence = tonumber(ARGV[2])
local sf = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if sf > fence then return {1, '', {}} end
if version > 0 then
  local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
  if cur ~= version - 1 then return {2, '', {}} end
  redis.call('HSET', KEYS[1], 'data', ARGV[4], 'version', ARGV[3], 'fence', ARGV[2], 'wid', ARGV[#ARGV])
  local state = ARGV[#ARGV-1]
  if redis.call('HGET', KEYS[1], 'st') ~= state or ARGV[5] == '1' then
    local t = redis.call('TIME')
    local exp = '0'
    if ARGV[5] == '1' then
      exp = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[6]))
    end
    redis.call('HSET', KEYS[1], 'st', state, 'ix', state .. '|' .. exp .. '|' .. t[1] .. string.format('%06d', tonumber(t[2])))
  end
end
local tn = tonumber(ARGV[9])
if tn > 0 and redis.call('LINDEX', KEYS[5], tn - 1) == ARGV[10] then redis.call('LTRIM', KEYS[5], tn, -1) end
local i = 12
local n = tonumber(ARGV[i])
for j = 1, n do redis.call('RPUSH', KEYS[5], ARGV[i+j]) end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do redis.call('ZADD', KEYS[2], ARGV[7], ARGV[i+j]) end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('ZREM', KEYS[3], ARGV[i+j])
  redis.call('HDEL', KEYS[4], ARGV[i+j])
end
i = i + n + 1
park(KEYS[3], KEYS[4], i)
local kept = {KEYS[1], KEYS[2], KEYS[7]}
if version > 0 then
  for _, key in ipairs(kept) do
    if ARGV[5] == '1' then redis.call('PEXPIRE', key, ARGV[6]) else redis.call('PERSIST', key) end
  end
else
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl == -2 then
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
    redis.call('PEXPIRE', KEYS[7], ARGV[6])
  elseif pttl > 0 then
    redis.call('PEXPIRE', KEYS[2], pttl)
    redis.call('PEXPIRE', KEYS[7], pttl)
  end
end
return {0, ixDirty(KEYS[1]), head()}
