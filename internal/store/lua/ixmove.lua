local cur = redis.call('HGET', KEYS[#KEYS], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[4]) then return 0 end
for i = 1, #KEYS - 1 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('ZADD', KEYS[tonumber(ARGV[2])], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[#KEYS], ARGV[1], ARGV[4])
return 1
