if redis.call('HGET', KEYS[1], 'ix') == ARGV[1] then redis.call('HSET', KEYS[1], 'ixok', ARGV[1]) end
return 0
