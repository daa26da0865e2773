-- inferkube rate limiter: token buckets and concurrency leases, one atomic script per call.
-- Loaded once per connection with SCRIPT LOAD and run with EVALSHA (redis-py register_script).
-- All times are Redis server time in milliseconds, so replicas never disagree on the clock.
--
-- KEYS[1] requests bucket (hash: level, ts)   inferkube:rl:{tenant}:requests
-- KEYS[2] tokens bucket   (hash: level, ts)   inferkube:rl:{tenant}:tokens
-- KEYS[3] concurrency     (zset lease->expiry) inferkube:rl:{tenant}:concurrency
-- KEYS[4] precheck only: the model budget's tokens bucket   inferkube:rl:{model:ns/name}:tokens
-- ARGV[1] op: "acquire" | "precheck" | "complete" | "renew"
-- acquire:  ARGV[2] rpm, [3] tpm, [4] max concurrent (0 = unlimited), [5] cost (tokens),
--           [6] window ms, [7] lease id, [8] lease ttl ms
--           returns {allowed, reason, retry_ms, req_level_milli, req_reset_ms, tok_level_milli, tok_reset_ms}
--           reason: 0 ok, 1 requests, 2 tokens, 3 concurrency, 4 tokens over the whole budget
-- precheck: what acquire would answer for no tokens, taking nothing, before the request body is read:
--           ARGV[2] rpm, [3] tpm, [4] max concurrent, [5] window ms, and with KEYS[4] also [6] the model
--           budget's tpm and [7] the tokens it needs at least; returns the tenant's 7 numbers as acquire
--           does, followed (with KEYS[4]) by the model budget's 7. One call for both: one round trip.
--           (KEYS[4] has another hash tag than the tenant's keys: fine on one Redis server, which is what
--           the limiter connects to; a Redis Cluster would refuse it as CROSSSLOT.)
-- complete: ARGV[2] tpm, [3] token delta (estimated - actual; positive refunds), [4] window ms,
--           [5] lease id or ""
-- renew:    ARGV[2] lease ttl ms, ARGV[3..] lease ids (only leases still present are extended)

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local op = ARGV[1]
local EPSILON = 1e-6 -- float refills land a hair below whole numbers

local function load(key, limit, window)
  if limit <= 0 then return nil end
  local v = redis.call('HMGET', key, 'level', 'ts')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil or ts == nil then return limit end -- absent (or expired) means full
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  level = level + elapsed * limit / window
  if level > limit then level = limit end
  return level
end

local function to_full(level, limit, window)
  if level >= limit then return 0 end
  return (limit - level) * window / limit
end

local function store(key, level, limit, window)
  if level < -limit then level = -limit end
  if level > limit then level = limit end
  redis.call('HSET', key, 'level', string.format('%.6f', level), 'ts', string.format('%.3f', now))
  -- The key expires when the bucket would be full anyway: an absent key reads as full.
  redis.call('PEXPIRE', key, math.ceil(to_full(level, limit, window)) + 1000)
end

local function milli(level)
  if level == nil then return -1 end
  return math.floor(level * 1000)
end

-- Why a request of `cost` tokens cannot go now (0: it can) and how long until it could.
local function decide(rl, tl, rpm, tpm, maxc, cost, window, slots)
  if tpm > 0 and cost > tpm then return 4, 0 end
  local reason, retry = 0, 0
  if rpm > 0 and rl < 1 - EPSILON then
    reason = 1
    retry = (1 - rl) * window / rpm
  end
  if tpm > 0 and tl < cost - EPSILON then
    if reason == 0 then reason = 2 end
    retry = math.max(retry, (cost - tl) * window / tpm)
  end
  if reason == 0 and maxc > 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    if redis.call('ZCARD', slots) >= maxc then reason = 3 end
  end
  return reason, retry
end

local function answer(reply, reason, retry, rl, rpm, tl, tpm, window)
  local r_reset, t_reset = 0, 0
  if rpm > 0 then r_reset = to_full(rl, rpm, window) end
  if tpm > 0 then t_reset = to_full(tl, tpm, window) end
  for _, v in ipairs({reason == 0 and 1 or 0, reason, math.ceil(retry), milli(rl), math.ceil(r_reset),
                      milli(tl), math.ceil(t_reset)}) do
    reply[#reply + 1] = v
  end
  return reply
end

if op == 'acquire' then
  local rpm, tpm, maxc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local cost, window = tonumber(ARGV[5]), tonumber(ARGV[6])
  local lease, lease_ttl = ARGV[7], tonumber(ARGV[8])
  local rl = load(KEYS[1], rpm, window)
  local tl = load(KEYS[2], tpm, window)
  local reason, retry = decide(rl, tl, rpm, tpm, maxc, cost, window, KEYS[3])
  if reason == 0 then
    if rpm > 0 then rl = rl - 1; store(KEYS[1], rl, rpm, window) end
    if tpm > 0 then tl = tl - cost; store(KEYS[2], tl, tpm, window) end
    if maxc > 0 then
      redis.call('ZADD', KEYS[3], now + lease_ttl, lease)
      redis.call('PEXPIRE', KEYS[3], lease_ttl + 1000)
    end
  end
  return answer({}, reason, retry, rl, rpm, tl, tpm, window)
elseif op == 'precheck' then
  local rpm, tpm, maxc, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local rl = load(KEYS[1], rpm, window)
  local tl = load(KEYS[2], tpm, window)
  local reason, retry = decide(rl, tl, rpm, tpm, maxc, 0, window, KEYS[3])
  local reply = answer({}, reason, retry, rl, rpm, tl, tpm, window)
  if KEYS[4] then
    local btpm, bcost = tonumber(ARGV[6]), tonumber(ARGV[7])
    local bl = load(KEYS[4], btpm, window)
    local breason, bretry = decide(nil, bl, 0, btpm, 0, bcost, window, nil)
    answer(reply, breason, bretry, nil, 0, bl, btpm, window)
  end
  return reply
elseif op == 'complete' then
  local tpm, delta, window, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
  if tpm > 0 and delta ~= 0 then
    local tl = load(KEYS[2], tpm, window)
    store(KEYS[2], tl + delta, tpm, window)
  end
  if lease ~= '' then redis.call('ZREM', KEYS[3], lease) end
  return 1
elseif op == 'renew' then
  local lease_ttl = tonumber(ARGV[2])
  local renewed = 0
  for i = 3, #ARGV do
    renewed = renewed + redis.call('ZADD', KEYS[3], 'XX', 'CH', now + lease_ttl, ARGV[i])
  end
  if renewed > 0 then redis.call('PEXPIRE', KEYS[3], lease_ttl + 1000) end
  return renewed
end
return redis.error_reply('unknown op ' .. tostring(op))
