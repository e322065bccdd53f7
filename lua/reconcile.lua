--[[
Sluice: after the response, settle a tenant's LLM-token reservation, atomically.

`reserved` tokens were taken at admission (token_bucket.lua, clamped to the capacity there, so the
same clamp applies here) and `used` were really used: the difference goes back to the bucket
(refund, capped at the capacity) or is charged (overage). A charge may leave the bucket in debt,
bounded at -capacity (at most one minute of refill to pay back). Same bucket model, clock and key
layout as token_bucket.lua.

KEYS[1]  token bucket  <prefix>:{<tenant>}:tok
ARGV[1]  tokens per minute = capacity (> 0)
ARGV[2]  tokens reserved at admission
ARGV[3]  tokens actually used

Returns the bucket's level after the adjustment (integer, rounded down; may be negative).
]]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000

local cap = tonumber(ARGV[1])
local reserved = tonumber(ARGV[2])
local used = tonumber(ARGV[3])
if reserved > cap then
  reserved = cap
end
local rate = cap / 60000

local v = redis.call('HMGET', KEYS[1], 'l', 't')
local level, t = tonumber(v[1]), tonumber(v[2])
if level == nil or t == nil then
  level = cap
else
  local dt = now - t
  if dt < 0 then
    dt = 0
  end
  level = math.min(cap, level + dt * rate)
end

local delta = reserved - used
if delta >= 0 then
  level = math.min(cap, level + delta)
else
  -- A charge stops at -capacity (bookings may already be below it: a charge then adds nothing).
  level = math.max(level + delta, math.min(level, -cap))
end

redis.call('HSET', KEYS[1], 'l', string.format('%.6f', level), 't', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - level) / rate) + 1)
return math.floor(level)
