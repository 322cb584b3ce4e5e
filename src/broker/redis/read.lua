-- KEYS: stream, meta. ARGV: after (exclusive, µs), count, ttl_s, max_size, max_age_us.
-- Returns {head, epoch, lost, existed, now, id1, uuid1, members1, ...}.
local existed = redis.call('EXISTS', KEYS[2])
local now = now_us()
ensure(KEYS[2], now)
trim(KEYS[1], KEYS[2], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
local m = redis.call('HMGET', KEYS[2], 'head', 'epoch', 'lost')
local out = {m[1], m[2], m[3], tostring(existed), string.format('%.0f', now)}
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
for _, e in ipairs(entries) do
  local f = e[2]
  local id, members = '', ''
  for i = 1, #f, 2 do
    if f[i] == 'i' then id = f[i + 1] elseif f[i] == 'm' then members = f[i + 1] end
  end
  table.insert(out, string.match(e[1], '^(%d+)'))
  table.insert(out, id)
  table.insert(out, members)
end
return out
