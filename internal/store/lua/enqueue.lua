local dup = 0
if ARGV[1] == '' then
  -- Take: no item to park
elseif redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  dup = 1
else
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
  redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[3])
end
local holder = redis.call('GET', KEYS[5])
if holder and ARGV[4] ~= '' and holder == ARGV[4] then
  local data, items, out = snapshot(KEYS[1], KEYS[3], KEYS[4], KEYS[7])
  return {dup, 1, tonumber(redis.call('GET', KEYS[6]) or '0'), ixDirty(KEYS[1]), '', data, items, out}
end
if holder then return {dup, 0, 0, ixDirty(KEYS[1]), holder} end
if ARGV[4] ~= '' and (redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[7]) == 1) then
  local f = redis.call('INCR', KEYS[6])
  local sf = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
  if f <= sf then
    f = sf + 1
    redis.call('SET', KEYS[6], f)
  end
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl == -2 then
    redis.call('PEXPIRE', KEYS[6], ARGV[6])
  elseif pttl > 0 then
    redis.call('PEXPIRE', KEYS[6], pttl)
  else
    redis.call('PERSIST', KEYS[6])
  end
  redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[5])
  local data, items, out = snapshot(KEYS[1], KEYS[3], KEYS[4], KEYS[7])
  return {dup, 1, f, ixDirty(KEYS[1]), '', data, items, out}
end
return {dup, 0, 0, ixDirty(KEYS[1]), ''}
