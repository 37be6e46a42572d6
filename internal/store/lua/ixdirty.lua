local function ixDirty(key)
  local v = redis.call('HMGET', key, 'ix', 'ixok')
  if v[1] and v[1] ~= v[2] then return v[1] end
  return ''
end
