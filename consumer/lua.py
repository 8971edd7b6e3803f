"""The Lua scripts of the Redis store (consumer/store.py registers them; each runs as one atomic step).

`APPLY_RUNS` and `CHECKPOINT` are the consumer's writes (one pipeline per batch, EVALSHA); `READ_RUN`,
`READ_TABLE` and `READ_PROJECTS` are the read API's, each resolving the active generation and reading in the same
step, so a read never mixes two generations. The reads are not sent as scripts: they form one Redis function
library (`READ_LIBRARY`, loaded with FUNCTION LOAD, called with FCALL_RO), so that the read-only ACL user may run
these functions and no other Lua (deploy/redis/README.md). The key layout is in consumer/store.py's docstring.
"""

from __future__ import annotations

import dataclasses
import hashlib

__all__ = ["APPLY_RUNS", "CHECKPOINT", "READ_LIBRARY", "READ_PROJECTS", "READ_RUN", "READ_TABLE", "FunctionLibrary",
           "read_library"]

_ADVANCE = """
-- Advance a partition's checkpoint (only forwards) and count the batch's undecodable records once. Returns 1
-- advanced, 0 already there, -1 Redis holds less than the checkpoint the caller knows it held ('' = unknown):
-- it lost writes it had acknowledged (a crash with AOF everysec); then nothing is written.
local function advance(hash, stats, partition, next_offset, undecodable, known)
  local current = redis.call('HGET', hash, partition)
  if known ~= '' and tonumber(current or '-1') < tonumber(known) then return -1 end
  if current and tonumber(current) >= tonumber(next_offset) then return 0 end
  redis.call('HSET', hash, partition, next_offset)
  if tonumber(undecodable) > 0 then redis.call('HINCRBY', stats, 'undecodable', undecodable) end
  return 1
end
"""

APPLY_RUNS = _ADVANCE + """
-- KEYS: 1 <ns>:active
-- ARGV: 1 generation that must be active ('' = do not check), 2 key prefix '<ns>:<gen>', 3 JSON array of runs,
--       4 lag key prefix '<ns>:<gen>:lag:<topic>:' (+ partition), 5 the batch's checkpoints as JSON
--       [checkpoint hash, stats hash, [[partition, next offset, undecodable records, known checkpoint or ''], ..]]
--       ('' = none in this call), then each run's state in the order of the runs ('' = the state is not stored
--       this time), then the tensor blobs (each run names its blobs' ARGV index)
-- A run: [run path, project path, run_id, partition, offset, expected previous offset ('' = none), updated ms,
--         events applied, dead letters, summary {field: value}, summary [removed], flat {..}, flat [..], meta {..},
--         meta [..], tensors {..}, tensors [..], numeric [flat paths: each one's score is its text in flat {..}],
--         numeric [removed paths], {sha: ARGV index},
--         offset of the first record not in the stored state (when its state is not stored; '': Redis has it),
--         {partition: offset of the last record the state holds} (when it is)]
--         (every number a string). Key names as consumer/store.py's Keys makes them.
-- The views and the applied offset are written with every batch; the state, when the consumer sends it. A run
-- whose stored state is older than its views is in the partition's lag set (scored by the first offset the state
-- lacks), so a consumer that starts over reads from there and folds the state up to the views again.
-- Returns -2 when the generation is no longer the active one (a replay switched it; nothing written), else one
-- result per run: 1 applied, 0 already applied (skipped), -1 the applied offset is not the expected one. Each run
-- is written as one step, and the whole call is atomic. A state is stored (1 or 0) unless Redis holds a newer one.
-- With checkpoints, returns {results, one `advance` result per checkpoint}; they advance only when no run got -1.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -2 end
local prefix = ARGV[2]
local runs = cjson.decode(ARGV[3])
local lag = ARGV[4]
-- in chunks: Lua's unpack() takes a few thousand values at most
local function hset(key, map)
  local args, n = {}, 0
  for field, value in pairs(map) do
    args[n + 1] = field; args[n + 2] = value; n = n + 2
    if n >= 1000 then redis.call('HSET', key, unpack(args, 1, n)); n = 0 end
  end
  if n > 0 then redis.call('HSET', key, unpack(args, 1, n)) end
end
local function each_chunk(command, key, list)  -- (an even chunk size: ZADD's lists are score, member pairs)
  local i = 1
  while i <= #list do
    local j = math.min(i + 999, #list)
    redis.call(command, key, unpack(list, i, j))
    i = j + 1
  end
end
local function hdel(key, list) each_chunk('HDEL', key, list) end
local out, written, events, dead = {}, 0, 0, 0
-- project path -> {runs = {score, run_id, ..}, by = {numeric flat path: {score, run_id, ..}}}: the sorted sets get
-- one ZADD per project (and path) and call, not one per run (and path); SADD of the paths likewise
local projects = {}
for i, r in ipairs(runs) do
  local run_id = r[3]
  local rk = prefix .. ':run:{' .. r[1] .. '}:'
  local pk = prefix .. ':project:{' .. r[2] .. '}:'
  local applied = redis.call('HGET', rk .. 'applied', r[4])
  local state = ARGV[5 + i]
  if applied and tonumber(applied) >= tonumber(r[5]) then
    out[i] = 0
  elseif (applied or '') ~= r[6] then
    out[i] = -1
  else
    hset(rk .. 'summary', r[10]); hdel(rk .. 'summary', r[11])
    hset(rk .. 'flat', r[12]); hdel(rk .. 'flat', r[13])
    hset(rk .. 'meta', r[14]); hdel(rk .. 'meta', r[15])
    hset(rk .. 'tensors', r[16]); hdel(rk .. 'tensors', r[17])
    local project = projects[r[2]]
    if not project then project = {runs = {}, by = {}}; projects[r[2]] = project end
    local by, flat = project.by, r[12]
    for _, path in ipairs(r[18]) do
      local members = by[path]
      if not members then members = {}; by[path] = members end
      members[#members + 1] = flat[path]; members[#members + 1] = run_id
    end
    for _, path in ipairs(r[19]) do redis.call('ZREM', pk .. 'by:' .. path, run_id) end
    for sha, index in pairs(r[20]) do redis.call('SET', rk .. 'blob:' .. sha, ARGV[tonumber(index)]) end
    redis.call('HSET', rk .. 'applied', r[4], r[5])
    if state == '' and r[21] ~= '' then redis.call('ZADD', lag .. r[4], 'NX', r[21], r[1]) end
    local ranked = project.runs
    ranked[#ranked + 1] = r[7]; ranked[#ranked + 1] = run_id
    events = events + tonumber(r[8]); dead = dead + tonumber(r[9])
    redis.call('PUBLISH', prefix .. ':changes:' .. r[2], run_id)
    out[i] = 1
    written = written + 1
  end
  if out[i] ~= -1 and state ~= '' then
    local held = redis.call('HGET', rk .. 'stateat', r[4])
    if not held or tonumber(held) < tonumber(r[22][r[4]]) then
      redis.call('SET', rk .. 'state', state)
      for partition, offset in pairs(r[22]) do
        redis.call('HSET', rk .. 'stateat', partition, offset)
        local views = redis.call('HGET', rk .. 'applied', partition)
        if views and tonumber(views) > tonumber(offset) then
          redis.call('ZADD', lag .. partition, 'NX', tonumber(offset) + 1, r[1])
        else
          redis.call('ZREM', lag .. partition, r[1])
        end
      end
    end
  end
end
for project, changed in pairs(projects) do
  local pk = prefix .. ':project:{' .. project .. '}:'
  each_chunk('ZADD', pk .. 'runs', changed.runs)
  local known = {}
  for path, members in pairs(changed.by) do
    each_chunk('ZADD', pk .. 'by:' .. path, members)
    known[#known + 1] = path
  end
  each_chunk('SADD', pk .. 'paths', known)
  redis.call('SADD', prefix .. ':projects', project)
end
if written > 0 then redis.call('HINCRBY', prefix .. ':stats', 'events', events) end
if dead > 0 then redis.call('HINCRBY', prefix .. ':stats', 'dead_letters', dead) end
if ARGV[5] == '' then return out end
local checkpoints, advanced = cjson.decode(ARGV[5]), {}
for _, result in ipairs(out) do
  if result == -1 then return {out, advanced} end
end
for i, c in ipairs(checkpoints[3]) do
  advanced[i] = advance(checkpoints[1], checkpoints[2], c[1], c[2], c[3], c[4])
end
return {out, advanced}
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
-- One page of a project's runs table from its sorted sets, in one atomic step (read-only: FCALL_RO).
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

CHECKPOINT = _ADVANCE + """
-- KEYS: 1 checkpoint hash, 2 stats; ARGV: 1 partition, 2 next offset, 3 undecodable records in the batch,
-- 4 the checkpoint the caller knows Redis held ('' = none). (Used when a batch's writes took more than one
-- apply_runs call, or there were none; otherwise apply_runs advances the checkpoints itself.)
return advance(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""


@dataclasses.dataclass(frozen=True)
class FunctionLibrary:
    """A Redis function library: `code` for FUNCTION LOAD, and the name of each of its functions (for FCALL_RO)."""

    name: str
    code: str
    functions: dict[str, str]


def read_library(tag: str = "") -> FunctionLibrary:
    """READ_RUN, READ_TABLE and READ_PROJECTS as one function library, each function flagged `no-writes` (so
    FCALL_RO runs it, and Redis refuses any write inside). The library's and the functions' names end with a digest
    of the code: two metricfold versions sharing a Redis never replace each other's functions, and loading the
    same library twice is harmless. *tag* makes another library of the same functions (tests use one of their own)."""
    bodies = {"read_run": READ_RUN, "read_table": READ_TABLE, "read_projects": READ_PROJECTS}
    digest = hashlib.sha256("\0".join([tag, *bodies.values()]).encode()).hexdigest()[:16]
    functions = {role: f"metricfold_{role}_{digest}" for role in bodies}
    parts = [f"#!lua name=metricfold_reads_{digest}\n"]
    for role, body in bodies.items():
        parts.append(f"redis.register_function{{function_name='{functions[role]}', flags={{'no-writes'}},\n"
                     f"  callback=function(KEYS, ARGV)\n{body}end}}\n")
    return FunctionLibrary(name=f"metricfold_reads_{digest}", code="".join(parts), functions=functions)


READ_LIBRARY = read_library()
