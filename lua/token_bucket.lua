--[[
Sluice: check and take (or book) one tenant's request bucket AND LLM-token bucket, atomically.

Algorithm: the classic token bucket with continuous refill, for both buckets. For requests this is
the same admission rule as GCRA: capacity `burst`, one request every 60000/rpm ms. For tokens:
capacity = tokens per minute, refilled at tpm/60000 per ms. Clock: Redis `TIME` (one clock for every
gateway node, no skew). The local limiter (src/ratelimit/bucket.rs) runs the same maths.

Reservations: a caller that may wait passes its wait budget (ARGV[6]). When a bucket holds too little
now but would hold enough within the budget, the cost is taken anyway and the bucket goes into debt:
the caller is admitted with the wait until its booked slot starts ([9]) and sleeps exactly that long.
Later callers queue behind the debt, so the booked slots come out at the bucket's rate, never faster.
A caller that gives up before its slot starts gives the cost back (lua/adjust.lua). The debt is
bounded by the budget: at most `budget × rate` below the cost.

State: each bucket is a hash with two fields, `l` (level, negative while in debt) and `t` (last
update, ms since the epoch, with microsecond precision). A missing key is a full bucket; every write
sets PEXPIRE to the time until the bucket is full again, so idle tenants cost no memory.

KEYS[1]  request bucket  <prefix>:{<tenant>}:req
KEYS[2]  token bucket    <prefix>:{<tenant>}:tok
         Both keys carry the same {<tenant>} hash tag: one slot, so this runs on Redis Cluster.
ARGV[1]  requests per minute (0 = no request limit; KEYS[1] is then not read or written)
ARGV[2]  burst: request bucket capacity (>= 1)
ARGV[3]  requests to take (clamped to burst; 0 takes none)
ARGV[4]  tokens per minute = token bucket capacity (0 = no token limit)
ARGV[5]  tokens to take (clamped to the capacity; 0 = the token bucket is not consulted)
ARGV[6]  wait budget, ms: book a later slot if it starts within this (0 = admit now or refuse)
ARGV[7]  lease: up to this many more requests taken as well, only from what is there now (no debt),
         only when the request was admitted at once (optional, default 0)

Returns an array of 12 integers (Lua numbers are truncated to integers by Redis, so every value is
already rounded here: remaining levels down, waits up):
  [1] 1 allowed (both takes done, now or booked), 0 refused (NOTHING taken from either bucket)
  [2] requests remaining after this call (>= 0; -1 when no request limit)
  [3] tokens remaining after this call (>= 0; -1 when the token bucket was not consulted)
  [4] retry after, ms (0 when allowed): max of [7] and [8]
  [5] request bucket full again in, ms
  [6] token bucket full again in, ms
  [7] request bucket wait, ms (> 0 only when the request bucket refused)
  [8] token bucket wait, ms (> 0 only when the token bucket refused)
  [9] booked: ms until the admitted request's slot starts (0 = now)
  [10] lease: extra requests taken (<= ARGV[7])
  [11] request bucket level after this call, rounded down (negative in debt; 0 when no limit)
  [12] token bucket level after this call, rounded down (negative in debt; 0 when not consulted)
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
local budget = tonumber(ARGV[6] or '0')
local lease = tonumber(ARGV[7] or '0')

local has_r = rpm > 0
local has_t = tpm > 0 and tcost > 0

-- One bucket's look: its refill rate per ms, current level, the cost clamped to the capacity, whether
-- the cost may be taken (now or booked within the budget), and the wait in ms until it would fit.
local function look(key, cap, per_minute, cost)
  local rate = per_minute / 60000
  if cost > cap then
    cost = cap
  end
  local level = level_of(key, cap, rate)
  if level >= cost then
    return rate, level, cost, true, 0
  end
  local wait = math.max(1, math.ceil((cost - level) / rate))
  return rate, level, cost, wait <= budget, wait
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
local booked, leased = 0, 0
if allowed then
  booked = math.max(rwait, twait)
  if has_r and rcost > 0 then
    rlevel = rlevel - rcost
    if booked == 0 and lease > 0 and rlevel >= 1 then
      leased = math.min(lease, math.floor(rlevel))
      rlevel = rlevel - leased
    end
    store(KEYS[1], burst, rrate, rlevel)
  end
  if has_t then
    tlevel = tlevel - tcost
    store(KEYS[2], tpm, trate, tlevel)
  end
end

local rrem, rreset, trem, treset, rraw, traw = -1, 0, -1, 0, 0, 0
if has_r then
  rrem = math.floor(math.max(rlevel, 0))
  rreset = math.ceil((burst - rlevel) / rrate)
  rraw = math.floor(rlevel)
end
if has_t then
  trem = math.floor(math.max(tlevel, 0))
  treset = math.ceil((tpm - tlevel) / trate)
  traw = math.floor(tlevel)
end

local rrefused, trefused = 0, 0
if not allowed then
  if not rok then rrefused = rwait end
  if not tok then trefused = twait end
end

return { allowed and 1 or 0, rrem, trem, math.max(rrefused, trefused), rreset, treset, rrefused,
  trefused, booked, leased, rraw, traw }
