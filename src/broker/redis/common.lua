-- Shared by every script (prepended to each): a channel's meta hash, Redis's
-- clock, and the trim that keeps a history within its limits.

-- Creates the channel's meta hash if missing (a new, or lost, history).
local function ensure(meta, now)
  if redis.call('EXISTS', meta) == 0 then
    redis.call('HSET', meta, 'head', string.format('%.0f', now), 'epoch', string.format('%.0f', now), 'lost', '0')
  end
end

-- Microseconds since the epoch, by Redis's clock (instance clocks never matter).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Drops what is beyond max_size or older than max_age_us at `now`, raising
-- the meta's `lost` to the newest message dropped. Run on publish and on
-- read, so a read never serves what the limits exclude, however long ago
-- the last publish trimmed.
local function trim(stream, meta, now, max_size, max_age_us)
  local lost = tonumber(redis.call('HGET', meta, 'lost'))
  local excess = redis.call('XLEN', stream) - max_size
  if excess > 0 then
    local old = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
    lost = math.max(lost, tonumber(string.match(old[#old][1], '^(%d+)')))
    redis.call('XTRIM', stream, 'MAXLEN', max_size)
  end
  -- A max_age longer than the epoch is "forever": the cutoff stays at 0.
  local minid = string.format('%.0f', math.max(0, now - max_age_us))
  local older = redis.call('XREVRANGE', stream, '(' .. minid .. '-0', '-', 'COUNT', 1)
  if #older > 0 then
    lost = math.max(lost, tonumber(string.match(older[1][1], '^(%d+)')))
    redis.call('XTRIM', stream, 'MINID', minid .. '-0')
  end
  redis.call('HSET', meta, 'lost', string.format('%.0f', lost))
end
