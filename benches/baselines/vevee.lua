-- Redis baseline for benches/load.rs, loaded once and called with EVALSHA.
-- The same semantics as a vevee step: check, hold, commit, and a ledger entry (XADD to the
-- `ledger` stream), all inside one atomic script.
--   reserve: KEYS[1] = b:{user}        ARGV = 'reserve', user, amount -> reservation id, or -1 if short
--   commit:  KEYS[1] = res:{id}        ARGV = 'commit', id            -> 1, -2 unknown, -3 not pending
--   grant:   KEYS[1] = b:{user}        ARGV = 'grant', user, ref, amount -> 1 granted, 0 repeat
--   consume: KEYS[1] = b:{user}        ARGV = 'consume', amount -> reservation id, or -1 if short
--            (hold and commit in one step, two ledger rows as in vevee; the user is read from the
--            key so that redis-benchmark's __rand_int__ can choose it)
local op = ARGV[1]
if op == 'reserve' then
  local user, n = ARGV[2], tonumber(ARGV[3])
  local rem = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
  if rem < n then return -1 end
  redis.call('HINCRBY', KEYS[1], 'remaining', -n)
  redis.call('HINCRBY', KEYS[1], 'reserved', n)
  local id = redis.call('INCR', 'seq:res')
  redis.call('HSET', 'res:' .. id, 'user', user, 'amount', n, 'status', 'pending')
  redis.call('XADD', 'ledger', '*', 'type', 'usage.reserved', 'user', user, 'amount', n, 'res', id)
  return id
elseif op == 'commit' then
  local id = ARGV[2]
  local r = redis.call('HMGET', KEYS[1], 'user', 'amount', 'status')
  if not r[1] then return -2 end
  if r[3] ~= 'pending' then return -3 end
  redis.call('HINCRBY', 'b:' .. r[1], 'reserved', -tonumber(r[2]))
  redis.call('HSET', KEYS[1], 'status', 'committed')
  redis.call('XADD', 'ledger', '*', 'type', 'usage.committed', 'user', r[1], 'amount', r[2], 'res', id)
  return 1
elseif op == 'consume' then
  local user, n = string.sub(KEYS[1], 3), tonumber(ARGV[2])
  local rem = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
  if rem < n then return -1 end
  redis.call('HINCRBY', KEYS[1], 'remaining', -n)
  redis.call('HINCRBY', KEYS[1], 'committed', n)
  local id = redis.call('INCR', 'seq:res')
  redis.call('HSET', 'res:' .. id, 'user', user, 'amount', n, 'status', 'committed')
  redis.call('XADD', 'ledger', '*', 'type', 'usage.reserved', 'user', user, 'amount', n, 'res', id)
  redis.call('XADD', 'ledger', '*', 'type', 'usage.committed', 'user', user, 'amount', n, 'res', id)
  return id
elseif op == 'grant' then
  local user, ref, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
  if redis.call('SADD', 'grants:' .. user, ref) == 0 then return 0 end
  redis.call('HINCRBY', KEYS[1], 'remaining', n)
  redis.call('XADD', 'ledger', '*', 'type', 'credits.granted', 'user', user, 'amount', n, 'ref', ref)
  return 1
end
return redis.error_reply('unknown op ' .. tostring(op))
