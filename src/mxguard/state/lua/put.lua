-- KEYS[1] entry; ARGV: clock, value, ttl
local now = clock(ARGV[1])
local ttl = tonumber(ARGV[3])
store(KEYS[1], ARGV[2], now + ttl, ttl)
return 1
