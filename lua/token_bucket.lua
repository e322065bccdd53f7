--[[
Sluice: check and take one tenant's request bucket AND LLM-token bucket, atomically.

Algorithm: the classic token bucket with continuous refill, for both buckets. For requests this is
the same admission rule as GCRA (what the local limiter, governor, runs): capacity `burst`, one
request every 60000/rpm ms. For tokens it is the local `TokenBucket`: capacity = tokens per minute,
refilled at tpm/60000 per ms. Clock: Redis `TIME` (one clock for every gateway node, no skew).

State: each bucket is a hash with two fields, `l` (level, may be negative after a reconcile charged
an overage) and `t` (last update, ms since the epoch, with microsecond precision). A missing key is a
full bucket; every write sets PEXPIRE to the time until the bucket is full again, so idle tenants
cost no memory.

KEYS[1]  request bucket  <prefix>:{<tenant>}:req
KEYS[2]  token bucket    <prefix>:{<tenant>}:tok
         Both keys carry the same {<tenant>} hash tag: one slot, so this runs on Redis Cluster.
ARGV[1]  requests per minute (0 = no request limit; KEYS[1] is then not read or written)
ARGV[2]  burst: request bucket capacity (>= 1)
ARGV[3]  requests to take (clamped to burst; 0 takes none)
ARGV[4]  tokens per minute = token bucket capacity (0 = no token limit)
ARGV[5]  tokens to take (clamped to the capacity; 0 = the token bucket is not consulted)

Returns an array of 8 integers (Lua numbers are truncated to integers by Redis, so every value is
already rounded here: remaining levels down, waits up):
  [1] 1 allowed (both takes done), 0 refused (NOTHING taken from either bucket)
  [2] requests remaining after this call (>= 0; -1 when no request limit)
  [3] tokens remaining after this call (>= 0; -1 when the token bucket was not consulted)
  [4] retry after, ms (0 when allowed): max of [7] and [8]
  [5] request bucket full again in, ms
  [6] token bucket full again in, ms
  [7] request bucket wait, ms (> 0 only when the request bucket refused)
  [8] token bucket wait, ms (> 0 only when the token bucket refused)
]]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000

local function level_of(key, cap, rate)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, t = tonumber(v[1]), tonumber(v[2])
  if l == nil or t == nil then
    return cap
  end
  local dt = now - t
  if dt < 0 then
    dt = 0
  end
  local x = l + dt * rate
  if x > cap then
    x = cap
  end
  return x
end

local function store(key, cap, rate, level)
  redis.call('HSET', key, 'l', string.format('%.6f', level), 't', string.format('%.3f', now))
  redis.call('PEXPIRE', key, math.ceil((cap - level) / rate) + 1)
end

local rpm = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local rcost = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local tcost = tonumber(ARGV[5])

local has_r = rpm > 0
local has_t = tpm > 0 and tcost > 0

-- One bucket's look: its refill rate per ms, current level, the cost clamped to the capacity, whether
-- the cost fits, and the wait in ms until it would.
local function look(key, cap, per_minute, cost)
  local rate = per_minute / 60000
  if cost > cap then
    cost = cap
  end
  local level = level_of(key, cap, rate)
  if level < cost then
    return rate, level, cost, false, math.max(1, math.ceil((cost - level) / rate))
  end
  return rate, level, cost, true, 0
end

local rrate, rlevel, trate, tlevel
local rok, tok = true, true
local rwait, twait = 0, 0
if has_r then
  rrate, rlevel, rcost, rok, rwait = look(KEYS[1], burst, rpm, rcost)
end
if has_t then
  trate, tlevel, tcost, tok, twait = look(KEYS[2], tpm, tpm, tcost)
end

local allowed = rok and tok
if allowed then
  if has_r and rcost > 0 then
    rlevel = rlevel - rcost
    store(KEYS[1], burst, rrate, rlevel)
  end
  if has_t then
    tlevel = tlevel - tcost
    store(KEYS[2], tpm, trate, tlevel)
  end
end

local rrem, rreset, trem, treset = -1, 0, -1, 0
if has_r then
  rrem = math.floor(math.max(rlevel, 0))
  rreset = math.ceil((burst - rlevel) / rrate)
end
if has_t then
  trem = math.floor(math.max(tlevel, 0))
  treset = math.ceil((tpm - tlevel) / trate)
end

return { allowed and 1 or 0, rrem, trem, math.max(rwait, twait), rreset, treset, rwait, twait }
