if ARGV[1] ~= '' then
  local cur = redis.call('GET', KEYS[1])
  if not cur then return 0 end
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' or rec['owner'] ~= ARGV[1] then return 0 end
end
return redis.call('DEL', KEYS[1])
