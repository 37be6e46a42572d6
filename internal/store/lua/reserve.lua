local cur = redis.call('GET', KEYS[1])
if cur then
  if ARGV[3] ~= '' then
    local ok, rec = pcall(cjson.decode, cur)
    if ok and type(rec) == 'table' and rec['owner'] == ARGV[3] and (tonumber(rec['status']) or 0) == 0 then return false end
  end
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
