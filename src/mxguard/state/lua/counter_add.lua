-- KEYS[1] counter; ARGV: clock, amount, window. The window starts at the first add and is
-- never pushed forward by later adds.
local now = clock(ARGV[1])
local amount = tonumber(ARGV[2])
local old, expires = live(KEYS[1], now)
if old then
  local total = tonumber(old) + amount
  redis.call('SET', KEYS[1], fmt(expires) .. '|' .. string.format('%d', total), 'KEEPTTL')
  return total
end
local window = tonumber(ARGV[3])
store(KEYS[1], string.format('%d', amount), now + window, window)
return amount
