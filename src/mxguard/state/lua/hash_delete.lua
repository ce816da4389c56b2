-- KEYS[1] hash; ARGV: field. A hash left with only its expiry is removed.
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n > 0 and redis.call('HLEN', KEYS[1]) <= 1 then
  redis.call('DEL', KEYS[1])
end
return n
