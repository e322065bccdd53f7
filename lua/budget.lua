--[[
Sluice: a tenant's spend budgets, atomically. One counter per budget period holds what the cluster
has spent in it, in integer micro-dollars (1 USD = 1000000): no float ever reaches Redis.

The caller names the period occurrence in the key (the budget clock decides which day, month or
window a request falls in), so a new period is a new, empty counter and the old one expires after
its period ended plus a grace (a late reconcile still finds it).

* take: admission. The request's estimated cost is taken from every period at once, or from none:
  refused when any period's spend plus the cost would exceed its limit. A cost of 0 only reads.
* add: after the fact. A signed amount is added to every period: the difference between a request's
  actual and reserved cost (refund < 0, overage > 0), a reservation given back, or what a node admitted
  from its local fallback while Redis was away. A refund never takes a counter below 0 nor creates
  one. Before adding, a counter is raised to the floor (optional, per key): what a node returning from
  fallback knows the cluster had spent, so a Redis that restarted empty keeps the spend.

KEYS[i]   spend counter of period i: <prefix>:{<tenant>}:budget:<period tag> (same hash tag: one slot)
ARGV[1]   'take' or 'add'
ARGV[2]   take: the cost (>= 0); add: the amount (may be negative)
then three per key, for key i at ARGV[3 + 3(i-1)]:
          limit of period i (micro-dollars; used by take)
          ms until the counter may expire (the period's end plus a grace, from the caller's clock)
          floor (add only; empty = none)

Returns an array: [1] 1 allowed / done, 0 refused (nothing taken), then each period's spend after
the call (micro-dollars, integers).
]]

local op = ARGV[1]
local amount = tonumber(ARGV[2])
local n = #KEYS
local spent = {}
for i = 1, n do
  spent[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end

local function arg(i, j)
  return ARGV[3 + 3 * (i - 1) + j]
end

local function store(i, value)
  local ttl = math.max(1, math.floor(tonumber(arg(i, 1))))
  redis.call('SET', KEYS[i], string.format('%d', value), 'PX', ttl)
end

if op == 'take' then
  for i = 1, n do
    if spent[i] + amount > tonumber(arg(i, 0)) then
      local out = { 0 }
      for j = 1, n do out[j + 1] = spent[j] end
      return out
    end
  end
  if amount > 0 then
    for i = 1, n do
      spent[i] = spent[i] + amount
      store(i, spent[i])
    end
  end
elseif op == 'add' then
  for i = 1, n do
    local existed = redis.call('EXISTS', KEYS[i]) == 1
    local floor = tonumber(arg(i, 2) or '')
    local v = spent[i]
    if floor ~= nil and v < floor then
      v = floor
    end
    v = math.max(0, v + amount)
    if existed or v > 0 then
      spent[i] = v
      store(i, v)
    end
  end
else
  return redis.error_reply('budget.lua: unknown op ' .. tostring(op))
end

local out = { 1 }
for i = 1, n do out[i + 1] = spent[i] end
return out
