local function inboxHead(inbox, inboxdata, n)
  local ids = redis.call('ZRANGE', inbox, 0, n - 1, 'WITHSCORES')
  local out = {}
  for i = 1, #ids, 2 do
    local d = redis.call('HGET', inboxdata, ids[i])
    if d then
      out[#out+1] = ids[i]
      out[#out+1] = ids[i+1]
      out[#out+1] = d
    end
  end
  return out
end
local function snapshot(state, inbox, inboxdata, outbox)
  return redis.call('HGET', state, 'data') or '', inboxHead(inbox, inboxdata, INBOX_HEAD), redis.call('LRANGE', outbox, 0, -1)
end
