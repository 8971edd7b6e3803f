"""The Lua scripts of the Redis store (consumer/store.py registers them; each runs as one atomic step).

`APPLY_RUN` and `CHECKPOINT` are the consumer's writes (one pipeline per batch); `READ_RUN`, `READ_TABLE` and
`READ_PROJECTS` are the read API's, each resolving the active generation and reading in the same step, so
a read never mixes two generations. The key layout is in consumer/store.py's docstring.
"""

__all__ = ["APPLY_RUN", "CHECKPOINT", "READ_PROJECTS", "READ_RUN", "READ_TABLE"]

APPLY_RUN = """
-- KEYS: 1 state, 2 applied, 3 summary, 4 flat, 5 meta, 6 tensors, 7 project runs, 8 project paths,
--       9 projects, 10 stats, 11 <ns>:active, then numeric_set by:<path> zsets, numeric_del zsets, blob keys
-- ARGV: 1 partition, 2 offset, 3 expected previous offset ('' = none), 4 state, 5 run_id, 6 updated ms,
--       7 channel, 8 project, 9 events applied, 10 dead letters, 11 generation that must be active
--       ('' = do not check), 12.. counts then items
-- Returns 1 applied, 0 already applied (skipped), -1 the applied offset is not the expected one,
-- -2 the generation is no longer the active one (a replay switched it).
if ARGV[11] ~= '' and redis.call('GET', KEYS[11]) ~= ARGV[11] then return -2 end
local applied = redis.call('HGET', KEYS[2], ARGV[1])
local offset = tonumber(ARGV[2])
if applied and tonumber(applied) >= offset then return 0 end
if (applied or '') ~= ARGV[3] then return -1 end
local n = {}
for i = 1, 10 do n[i] = tonumber(ARGV[11 + i]) end
local a = 21
local k = 12
-- in chunks: Lua's unpack() takes a few thousand values at most
local function pairs_into(key, count)
  local done = 0
  while done < count do
    local take = math.min(count - done, 500)
    local args = {}
    for i = 1, take * 2 do args[i] = ARGV[a + i] end
    redis.call('HSET', key, unpack(args))
    a = a + take * 2; done = done + take
  end
end
local function dels_from(key, count)
  local done = 0
  while done < count do
    local take = math.min(count - done, 1000)
    local args = {}
    for i = 1, take do args[i] = ARGV[a + i] end
    redis.call('HDEL', key, unpack(args))
    a = a + take; done = done + take
  end
end
pairs_into(KEYS[3], n[1]); dels_from(KEYS[3], n[2])
pairs_into(KEYS[4], n[3]); dels_from(KEYS[4], n[4])
pairs_into(KEYS[5], n[5]); dels_from(KEYS[5], n[6])
pairs_into(KEYS[6], n[7]); dels_from(KEYS[6], n[8])
for i = 1, n[9] do
  redis.call('ZADD', KEYS[k], ARGV[a + 2], ARGV[5])
  redis.call('SADD', KEYS[8], ARGV[a + 1])
  a = a + 2; k = k + 1
end
for i = 1, n[10] do
  redis.call('ZREM', KEYS[k], ARGV[5])
  k = k + 1
end
local blobs = #KEYS - k + 1
for i = 1, blobs do
  redis.call('SET', KEYS[k], ARGV[a + 1])
  a = a + 1; k = k + 1
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[7], ARGV[6], ARGV[5])
redis.call('SADD', KEYS[9], ARGV[8])
redis.call('HINCRBY', KEYS[10], 'events', ARGV[9])
if tonumber(ARGV[10]) > 0 then redis.call('HINCRBY', KEYS[10], 'dead_letters', ARGV[10]) end
redis.call('PUBLISH', ARGV[7], ARGV[5])
return 1
"""

READ_RUN = """
-- KEYS: 1 <ns>:active; ARGV: 1 namespace, 2 run path, 3 generation ('' = the active one)
-- Resolves the generation and reads the run's hashes in one atomic step, so a read never mixes generations.
local gen = ARGV[3]
if gen == '' then gen = redis.call('GET', KEYS[1]) end
if not gen then return {false} end
local base = ARGV[1] .. ':' .. gen .. ':run:{' .. ARGV[2] .. '}:'
return {gen, redis.call('HGETALL', base .. 'summary'), redis.call('HGETALL', base .. 'flat'),
        redis.call('HGETALL', base .. 'meta'), redis.call('HGETALL', base .. 'tensors')}
"""

READ_TABLE = """
-- KEYS: 1 <ns>:active; ARGV: 1 namespace, 2 project path, 3 generation ('' = the active one), 4 sort path
-- ('' = last update), 5 '1' descending / '0' ascending, 6 offset, 7 limit, 8.. flat paths to read per run.
-- One page of a project's runs table from its sorted sets, in one atomic step (read-only: run with EVAL_RO).
-- Returns {false} (no generation), {gen, -1} (no such project), {gen, -2} (no such sort path), or
-- {gen, total in the sort index, runs in the project, {{run_id, {name, state, updated, created}, {values}}...},
-- the project's numeric flat paths (the column picker)}.
local gen = ARGV[3]
if gen == '' then gen = redis.call('GET', KEYS[1]) end
if not gen then return {false} end
local prefix = ARGV[1] .. ':' .. gen .. ':'
if redis.call('SISMEMBER', prefix .. 'projects', ARGV[2]) == 0 then return {gen, -1} end
local pkey = prefix .. 'project:{' .. ARGV[2] .. '}:'
local zkey = pkey .. 'runs'
if ARGV[4] ~= '' then
  if redis.call('SISMEMBER', pkey .. 'paths', ARGV[4]) == 0 then return {gen, -2} end
  zkey = pkey .. 'by:' .. ARGV[4]
end
local first = tonumber(ARGV[6])
local last = first + tonumber(ARGV[7]) - 1
local ids
if ARGV[5] == '1' then ids = redis.call('ZREVRANGE', zkey, first, last) else ids = redis.call('ZRANGE', zkey, first, last) end
local cols = {}
for i = 8, #ARGV do cols[#cols + 1] = ARGV[i] end
local rows = {}
for i, id in ipairs(ids) do
  local base = prefix .. 'run:{' .. ARGV[2] .. '/' .. id .. '}:'
  local values = {}
  if #cols > 0 then values = redis.call('HMGET', base .. 'flat', unpack(cols)) end
  rows[i] = {id, redis.call('HMGET', base .. 'meta', 'name', 'state', 'updated', 'created'), values}
end
return {gen, redis.call('ZCARD', zkey), redis.call('ZCARD', pkey .. 'runs'), rows, redis.call('SMEMBERS', pkey .. 'paths')}
"""

READ_PROJECTS = """
-- KEYS: 1 <ns>:active; ARGV: 1 namespace. Every project with its number of runs, and the stats hash.
local gen = redis.call('GET', KEYS[1])
if not gen then return {false} end
local prefix = ARGV[1] .. ':' .. gen .. ':'
local out = {}
for i, project in ipairs(redis.call('SMEMBERS', prefix .. 'projects')) do
  out[i] = {project, redis.call('ZCARD', prefix .. 'project:{' .. project .. '}:runs')}
end
return {gen, out, redis.call('HGETALL', prefix .. 'stats')}
"""

CHECKPOINT = """
-- KEYS: 1 checkpoint hash, 2 stats; ARGV: 1 partition, 2 next offset, 3 undecodable records in the batch,
-- 4 the checkpoint the caller knows Redis held ('' = none). Returns 1 advanced, 0 already there, -1 Redis holds
-- less than that: it lost writes it had acknowledged (a crash with AOF everysec); then nothing is written.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[4] ~= '' and tonumber(current or '-1') < tonumber(ARGV[4]) then return -1 end
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[2], 'undecodable', ARGV[3]) end
return 1
"""
