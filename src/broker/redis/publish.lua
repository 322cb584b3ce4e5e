-- KEYS: stream, meta. ARGV: id, members, max_size, max_age_us, ttl_s, notify, channel.
-- Appends one message with a timestamp minted from Redis's clock, strictly
-- after the channel's head; trims; announces it on the notify channel.
local now = now_us()
ensure(KEYS[2], now)
local head = tonumber(redis.call('HGET', KEYS[2], 'head'))
local ts = math.max(now, head + 1)
local tss = string.format('%.0f', ts)
redis.call('XADD', KEYS[1], tss .. '-0', 'i', ARGV[1], 'm', ARGV[2])
trim(KEYS[1], KEYS[2], now, tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('HSET', KEYS[2], 'head', tss)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7] .. ' ' .. tss)
return tss
