-- KEYS[1] hash; ARGV: clock. Returns a flat field/value list without the expiry field.
local now = clock(ARGV[1])
local expires = tonumber(redis.call('HGET', KEYS[1], EXPIRES_FIELD))
if not expires then
  return {}
end
if expires <= now then
  redis.call('DEL', KEYS[1])
  return {}
end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  if all[i] ~= EXPIRES_FIELD then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
