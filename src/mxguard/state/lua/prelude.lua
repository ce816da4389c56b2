-- Shared by every mxguard script (prepended when the script is registered).
--
-- An entry is stored as "<expires>|<value>": the logical expiry travels with the value, so a
-- test or the simulator that passes its own clock sees the same expiry rules as production,
-- which uses the server's clock. Redis's own TTL is set as well and only collects garbage.
-- ARGV[1] is always the caller's clock as text when the client clock is trusted, or "" to
-- read the server's TIME, so every MX host shares one clock.

-- A caller's clock may be virtual and run behind real time; Redis's TTL, which counts real
-- time, must then not drop an entry before the caller's clock says it expired.
local slack_ms = 0

local function clock(arg)
  if arg ~= '' then
    slack_ms = 60000
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- 17 significant digits survive the trip back to a Python float exactly
local function fmt(x)
  return string.format('%.17g', x)
end

-- the live value (and its expiry) of a plain entry, or nil when absent or expired
local function live(key, now)
  local raw = redis.call('GET', key)
  if not raw then
    return nil, nil
  end
  local bar = string.find(raw, '|', 1, true)
  local expires = tonumber(string.sub(raw, 1, bar - 1))
  if expires <= now then
    return nil, nil
  end
  return string.sub(raw, bar + 1), expires
end

-- Redis refuses PX 0; an entry with no time left is simply not kept
local function store(key, value, expires, ttl)
  local ms = math.ceil(ttl * 1000) + slack_ms
  if ms <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('SET', key, fmt(expires) .. '|' .. value, 'PX', ms)
end

-- the field of a hash that holds the hash's logical expiry; callers' fields never start with NUL
local EXPIRES_FIELD = '\0expires'
