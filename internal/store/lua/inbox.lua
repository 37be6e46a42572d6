return inboxHead(KEYS[1], KEYS[2], tonumber(ARGV[1]) + 1)
