-- KEYS[1] entry; ARGV: clock
local now = clock(ARGV[1])
local value = live(KEYS[1], now)
return value
