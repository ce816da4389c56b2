-- KEYS[1] entry; ARGV: clock, value, ttl. Returns the live value, or nil when this call stored.
local now = clock(ARGV[1])
local old = live(KEYS[1], now)
if old then
  return old
end
local ttl = tonumber(ARGV[3])
store(KEYS[1], ARGV[2], now + ttl, ttl)
return nil
