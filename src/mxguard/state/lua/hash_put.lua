-- KEYS[1] hash; ARGV: clock, field, value, ttl. The whole hash lives ttl past its latest write.
local now = clock(ARGV[1])
local ttl = tonumber(ARGV[4])
local expires = tonumber(redis.call('HGET', KEYS[1], EXPIRES_FIELD))
if expires and expires <= now then
  redis.call('DEL', KEYS[1])
end
local ms = math.ceil(ttl * 1000) + slack_ms
if ms <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], EXPIRES_FIELD, fmt(now + ttl))
redis.call('PEXPIRE', KEYS[1], ms)
return 1
