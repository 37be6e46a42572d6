-- park(inbox, inboxdata, i): parks the items listed from ARGV[i] (a count,
-- then id, seq, data for each) in the inbox, keeping an id already there
-- with its first data.
local function park(inbox, inboxdata, i)
  local n = tonumber(ARGV[i])
  for j = 0, n - 1 do
    local id = ARGV[i+1+3*j]
    if redis.call('ZADD', inbox, 'NX', ARGV[i+2+3*j], id) == 1 then
      redis.call('HSET', inboxdata, id, ARGV[i+3+3*j])
    end
  end
end
