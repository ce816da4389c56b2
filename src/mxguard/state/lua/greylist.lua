-- KEYS[1] triplet entry; ARGV: clock, delay, retry_window, pass_ttl.
-- The twin of mxguard.state.base.greylist_transition; the contract tests hold the two equal.
-- The value is "<first_seen>|<passed 0/1>". Returns {status, first_seen as text}.
local now = clock(ARGV[1])
local delay = tonumber(ARGV[2])
local retry_window = tonumber(ARGV[3])
local pass_ttl = tonumber(ARGV[4])
local old = live(KEYS[1], now)
if old then
  local bar = string.find(old, '|', 1, true)
  local first_text = bar and string.sub(old, 1, bar - 1) or old
  local passed = bar and string.sub(old, bar + 1) or ''
  local first = tonumber(first_text)
  if passed == '1' then
    store(KEYS[1], fmt(first) .. '|1', now + pass_ttl, pass_ttl)
    return {'known', fmt(first)}
  end
  local age = now - first
  if age < delay then
    return {'early', fmt(first)}
  end
  if age <= retry_window then
    store(KEYS[1], fmt(first) .. '|1', now + pass_ttl, pass_ttl)
    return {'passed', fmt(first)}
  end
end
store(KEYS[1], fmt(now) .. '|0', now + retry_window, retry_window)
return {'new', fmt(now)}
