-- KEYS[1] entry; ARGV: clock, value, ttl, expect_present ("1"/"0"), expected value
local now = clock(ARGV[1])
local old = live(KEYS[1], now)
if ARGV[4] == '1' then
  if old ~= ARGV[5] then
    return 0
  end
elseif old then
  return 0
end
local ttl = tonumber(ARGV[3])
store(KEYS[1], ARGV[2], now + ttl, ttl)
return 1
