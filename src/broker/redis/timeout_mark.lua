-- KEYS: meta. ARGV: ttl_s. A cursor no later message can be stamped before.
local now = now_us()
ensure(KEYS[1], now)
local head = math.max(tonumber(redis.call('HGET', KEYS[1], 'head')), now)
local hs = string.format('%.0f', head)
redis.call('HSET', KEYS[1], 'head', hs)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return hs
