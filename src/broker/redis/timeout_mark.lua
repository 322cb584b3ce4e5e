-- KEYS: stream, meta. ARGV: ttl_s, floor (µs).
-- A cursor no later message can be stamped before; or "" when a message
-- newer than `floor` (what the poll has read) is in the stream: the mark
-- would pass over it, so the poll reads again instead.
local now = now_us()
ensure(KEYS[2], now)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 and tonumber(string.match(last[1][1], '^(%d+)')) > tonumber(ARGV[2]) then
  return ''
end
local head = math.max(tonumber(redis.call('HGET', KEYS[2], 'head')), now)
local hs = string.format('%.0f', head)
redis.call('HSET', KEYS[2], 'head', hs)
redis.call('EXPIRE', KEYS[2], ARGV[1])
return hs
