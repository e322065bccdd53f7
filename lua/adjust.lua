--[[
Sluice: add to or take from one tenant's request bucket and LLM-token bucket after the fact,
atomically. Same bucket model, clock and key layout as token_bucket.lua.

* Give back (positive amounts): a booked request that gave up before its slot started (deadline,
  client gone, shed) returns what it took. Capped at the capacity.
* Charge (negative amounts): what a node admitted from its local fallback while Redis was away is
  charged to the global buckets when it returns, so an outage or a breaker flap adds no capacity: the
  cluster's admissions count once, whichever mode made them. A charge stops at the debt bookings may
  make (ARGV[6], ARGV[7]: wait budget × rate; 0 when nobody waits), or where the level already is if
  lower: had those requests gone through Redis, it would have booked them that far and refused the
  rest. A Redis that restarted empty so learns the debt the cluster's bookings still hold.

KEYS[1]  request bucket  <prefix>:{<tenant>}:req
KEYS[2]  token bucket    <prefix>:{<tenant>}:tok
ARGV[1]  requests per minute (0 = no request limit)
ARGV[2]  burst: request bucket capacity
ARGV[3]  requests to give back (> 0) or charge (< 0)
ARGV[4]  tokens per minute = token bucket capacity (0 = no token limit)
ARGV[5]  tokens to give back (> 0) or charge (< 0)
ARGV[6]  requests: how far below 0 a charge may take the bucket (optional, default 0)
ARGV[7]  tokens: the same (optional, default 0)
ARGV[8]  requests: cap the bucket at this level first (optional; empty = no cap)
ARGV[9]  tokens: the same
         The cap is what a node returning from fallback knows the cluster's bucket holds (its own
         fallback level, from the last global answer on, times the node count): a Redis that
         restarted empty (a full bucket) so keeps the debt of requests the cluster already booked.

Returns 1.
]]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000

local function adjust(key, cap, per_minute, amount, floor, ceiling)
  if per_minute <= 0 or (amount == 0 and ceiling == nil) then
    return
  end
  local rate = per_minute / 60000
  local v = redis.call('HMGET', key, 'l', 't')
  local level, t = tonumber(v[1]), tonumber(v[2])
  if level == nil or t == nil then
    -- Missing: full.
    level = cap
  else
    local dt = now - t
    if dt < 0 then
      dt = 0
    end
    level = math.min(cap, level + dt * rate)
  end
  if ceiling ~= nil and level > ceiling then
    level = ceiling
  end
  if amount > 0 then
    level = math.min(cap, level + math.min(amount, cap))
  else
    level = math.max(level + amount, math.min(level, -floor))
  end
  redis.call('HSET', key, 'l', string.format('%.6f', level), 't', string.format('%.3f', now))
  redis.call('PEXPIRE', key, math.ceil((cap - level) / rate) + 1)
end

adjust(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[6] or '0'),
  tonumber(ARGV[8] or ''))
adjust(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7] or '0'),
  tonumber(ARGV[9] or ''))
return 1
