"""The Lua scripts of the Redis backend: every multi-step update runs as one script.

Redis runs a script atomically, so a check and the write it guards can never be
interleaved with another client's (the original system's read-modify-write
counters lost updates that way). Times arrive as decimal strings written by
Python's ``repr(float)``, which Lua parses back to the same double; the scripts
copy them into storage verbatim instead of formatting numbers themselves, because
Lua would print them with 14 significant digits and lose precision.

Liveness and leases are decided from the caller's ``now`` argument, never from a
key's TTL: ``PEXPIRE`` only collects garbage, well after the logical end.
"""

from __future__ import annotations

__all__ = [
    "BREAKER_COMPARE_AND_SET",
    "DEAD_LETTER_ADD",
    "DEAD_LETTER_COMPARE_AND_SET",
    "DEAD_LETTER_PURGE",
    "IDEMPOTENCY_ACQUIRE",
    "IDEMPOTENCY_COMPLETE",
    "IDEMPOTENCY_DELETE",
    "IDEMPOTENCY_RELEASE",
    "IDEMPOTENCY_RENEW",
]

# Stored numbers may be "inf" (a TTL of forever), which Lua 5.4's tonumber refuses.
_NUMBER = """
local function num(text)
  if text == 'inf' then return math.huge end
  if text == '-inf' then return -math.huge end
  return tonumber(text)
end
"""

# A garbage-collection horizon of "0" means "never": the record lives forever.
_EXPIRE = """
local function expire(key, ms)
  if ms == '0' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ms) end
end
"""

# An idempotency record is ONE string, so the common claim is a GET and a SET:
#
#   STATE|token|created|fp bytes|fp|lease|expires|updated|result
#
# The fingerprint is length-prefixed (in bytes, as Lua counts) because it is free
# text; the result is last and free text too (present only when COMPLETED). The
# head "STATE|token|" is what ownership checks compare, byte for byte, so complete,
# release and renew never parse a number to decide. Python writes every float;
# the scripts only copy or splice the text.
_RECORD = """
local function fields(record)
  local state_end = string.find(record, '|', 1, true)
  local token_end = string.find(record, '|', state_end + 1, true)
  local created_end = string.find(record, '|', token_end + 1, true)
  local size_end = string.find(record, '|', created_end + 1, true)
  local fp_end = size_end + tonumber(string.sub(record, created_end + 1, size_end - 1))
  local lease_end = string.find(record, '|', fp_end + 2, true)
  local exp_end = string.find(record, '|', lease_end + 1, true)
  return {
    state = string.sub(record, 1, state_end - 1),
    token = tonumber(string.sub(record, state_end + 1, token_end - 1)),
    fp = string.sub(record, size_end + 1, fp_end),
    fixed_end = fp_end,
    lease = string.sub(record, fp_end + 2, lease_end - 1),
    exp = string.sub(record, lease_end + 1, exp_end - 1),
  }
end
"""

IDEMPOTENCY_ACQUIRE = (
    _NUMBER
    + _RECORD
    + """
-- KEYS: record, token counter
-- ARGV: fingerprint, now, record gc ms ('0' = keep), counter gc ms ('0' = keep),
--       the record after its token: '|created|fp bytes|fp|lease|expires|updated|'
-- Returns the new token (an integer) when claimed, else the live record (a string).
local current = redis.call('GET', KEYS[1])
local previous = 0
if current then
  local f = fields(current)
  previous = f.token
  local now = num(ARGV[2])
  if num(f.exp) > now and (f.fp ~= ARGV[1] or f.state == 'COMPLETED'
      or (f.state == 'IN_PROGRESS' and f.lease ~= '' and num(f.lease) > now)) then
    return current
  end
end
-- The counter outlives the record, so a key collected by its TTL never hands
-- out a token that a late owner of an earlier claim still holds.
local token = math.max(previous, tonumber(redis.call('GET', KEYS[2]) or '0')) + 1
local text = string.format('%d', token)
if ARGV[4] == '0' then redis.call('SET', KEYS[2], text)
else redis.call('SET', KEYS[2], text, 'PX', ARGV[4]) end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], 'IN_PROGRESS|' .. text .. ARGV[5])
else redis.call('SET', KEYS[1], 'IN_PROGRESS|' .. text .. ARGV[5], 'PX', ARGV[3]) end
return token
"""
)

IDEMPOTENCY_COMPLETE = (
    _EXPIRE
    + _RECORD
    + """
-- KEYS: record, token counter
-- ARGV: owner head 'IN_PROGRESS|token|', new head 'COMPLETED|token|',
--       '|' .. '' (lease) .. '|expires|updated|result', record gc ms, counter gc ms
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
local f = fields(current)
local record = ARGV[2] .. string.sub(current, #ARGV[1] + 1, f.fixed_end) .. ARGV[3]
if ARGV[4] == '0' then redis.call('SET', KEYS[1], record)
else redis.call('SET', KEYS[1], record, 'PX', ARGV[4]) end
expire(KEYS[2], ARGV[5])
return 1
"""
)

IDEMPOTENCY_RELEASE = (
    _RECORD
    + """
-- KEYS: record; ARGV: owner head 'IN_PROGRESS|token|', new head 'FAILED|token|', now
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
local f = fields(current)
redis.call('SET', KEYS[1], ARGV[2] .. string.sub(current, #ARGV[1] + 1, f.fixed_end)
  .. '||' .. f.exp .. '|' .. ARGV[3] .. '|', 'KEEPTTL')
return 1
"""
)

IDEMPOTENCY_RENEW = (
    _NUMBER
    + _RECORD
    + """
-- KEYS: record, token counter
-- ARGV: owner head 'IN_PROGRESS|token|', lease_until, now, grace seconds,
--       counter horizon seconds
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
local f = fields(current)
local record = string.sub(current, 1, f.fixed_end) .. '|' .. ARGV[2] .. '|' .. f.exp
  .. '|' .. ARGV[3] .. '|'
local seconds = math.max(num(f.exp), num(ARGV[2])) - num(ARGV[3]) + num(ARGV[4])
if seconds == math.huge then
  redis.call('SET', KEYS[1], record)
  redis.call('PERSIST', KEYS[2])
  return 1
end
local ms = math.min(math.max(math.ceil(seconds * 1000), 1), 1e15)
redis.call('SET', KEYS[1], record, 'PX', string.format('%d', ms))
redis.call('PEXPIRE', KEYS[2], string.format('%d', ms + num(ARGV[5]) * 1000))
return 1
"""
)

IDEMPOTENCY_DELETE = """
-- KEYS: record, token counter
local removed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return removed
"""

BREAKER_COMPARE_AND_SET = """
-- KEYS: record; ARGV: expected version ('' = none may exist), record JSON
local current = redis.call('GET', KEYS[1])
if current then
  if ARGV[1] == '' or cjson.decode(current)['version'] ~= tonumber(ARGV[1]) then
    return 0
  end
elseif ARGV[1] ~= '' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# The per-record index entries live in one hash (id -> JSON array of version,
# status, NEWEST member, REPLAY member, due score or ''), so a script can move a
# record between indexes without parsing the record or formatting a float.
DEAD_LETTER_ADD = """
-- KEYS: record, meta hash, NEWEST index, REPLAY index, due index
-- ARGV: id, record JSON, meta JSON, NEWEST member, REPLAY member, due score or ''
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[4])
redis.call('ZADD', KEYS[4], 0, ARGV[5])
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1]) end
return 1
"""

_UNINDEX = """
local function unindex(base, due, id, meta)
  redis.call('ZREM', base .. 'newest:' .. meta[2], meta[3])
  redis.call('ZREM', base .. 'replay:' .. meta[2], meta[4])
  if meta[5] ~= '' then redis.call('ZREM', due, id) end
end
"""

DEAD_LETTER_COMPARE_AND_SET = (
    _UNINDEX
    + """
-- KEYS: record, meta hash, new NEWEST index, new REPLAY index, due index
-- ARGV: id, expected version, record JSON, meta JSON, NEWEST member, REPLAY member,
--       due score or '', index key base
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 0 end
local meta = cjson.decode(raw)
if meta[1] ~= tonumber(ARGV[2]) then return 0 end
unindex(ARGV[8], KEYS[5], ARGV[1], meta)
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[3], 0, ARGV[5])
redis.call('ZADD', KEYS[4], 0, ARGV[6])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1]) end
return 1
"""
)

DEAD_LETTER_PURGE = (
    _UNINDEX
    + """
-- KEYS: meta hash, due index
-- ARGV: index key base, then (id, version) pairs; a record whose version moved
-- since it was matched is left alone (it may no longer match).
local removed = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local meta = cjson.decode(raw)
    if meta[1] == tonumber(ARGV[i + 1]) then
      unindex(ARGV[1], KEYS[2], id, meta)
      redis.call('DEL', ARGV[1] .. 'rec:' .. id)
      redis.call('HDEL', KEYS[1], id)
      removed = removed + 1
    end
  end
end
return removed
"""
)
