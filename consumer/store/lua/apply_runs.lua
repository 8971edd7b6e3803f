
-- KEYS: 1 <ns>:active
-- ARGV: 1 generation that must be active ('' = do not check), 2 key prefix '<ns>:<gen>', 3 JSON array of runs,
--       4 lag key prefix '<ns>:<gen>:lag:<topic>:' (+ partition), 5 the batch's checkpoints as JSON
--       [checkpoint hash, stats hash, [[partition, next offset, undecodable records, known checkpoint or ''], ..]]
--       ('' = none in this call), then each run's state in the order of the runs ('' = the state is not stored
--       this time), then the tensor blobs (each run names its blobs' ARGV index)
-- A run: a RunRecord (consumer/store/record.py), as a JSON array in its fields' order; `R` (put before this
-- script from that class) names the positions: r[R.offset].
-- Every number a string. Key names as consumer/store/keys.py's Keys makes them.
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
  local run_id = r[R.run_id]
  local rk = prefix .. ':run:{' .. r[R.run_path] .. '}:'
  local pk = prefix .. ':project:{' .. r[R.project] .. '}:'
  local applied = redis.call('HGET', rk .. 'applied', r[R.partition])
  local state = ARGV[5 + i]
  if applied and tonumber(applied) >= tonumber(r[R.offset]) then
    out[i] = 0
  elseif (applied or '') ~= r[R.expected_prev] then
    out[i] = -1
  else
    hset(rk .. 'summary', r[R.summary_set]); hdel(rk .. 'summary', r[R.summary_del])
    hset(rk .. 'flat', r[R.flat_set]); hdel(rk .. 'flat', r[R.flat_del])
    hset(rk .. 'meta', r[R.meta_set]); hdel(rk .. 'meta', r[R.meta_del])
    hset(rk .. 'tensors', r[R.tensors_set]); hdel(rk .. 'tensors', r[R.tensors_del])
    local project = projects[r[R.project]]
    if not project then project = {runs = {}, by = {}}; projects[r[R.project]] = project end
    local by, flat = project.by, r[R.flat_set]
    for _, path in ipairs(r[R.numeric_set]) do
      local members = by[path]
      if not members then members = {}; by[path] = members end
      members[#members + 1] = flat[path]; members[#members + 1] = run_id
    end
    for _, path in ipairs(r[R.numeric_del]) do redis.call('ZREM', pk .. 'by:' .. path, run_id) end
    for sha, index in pairs(r[R.blobs]) do redis.call('SET', rk .. 'blob:' .. sha, ARGV[tonumber(index)]) end
    redis.call('HSET', rk .. 'applied', r[R.partition], r[R.offset])
    if state == '' and r[R.lacks_from] ~= '' then redis.call('ZADD', lag .. r[R.partition], 'NX', r[R.lacks_from], r[R.run_path]) end
    local ranked = project.runs
    ranked[#ranked + 1] = r[R.updated_ms]; ranked[#ranked + 1] = run_id
    events = events + tonumber(r[R.events]); dead = dead + tonumber(r[R.dead_letters])
    redis.call('PUBLISH', prefix .. ':changes:' .. r[R.project], run_id)
    out[i] = 1
    written = written + 1
  end
  if out[i] ~= -1 and state ~= '' then
    local held = redis.call('HGET', rk .. 'stateat', r[R.partition])
    if not held or tonumber(held) < tonumber(r[R.state_at][r[R.partition]]) then
      redis.call('SET', rk .. 'state', state)
      for partition, offset in pairs(r[R.state_at]) do
        redis.call('HSET', rk .. 'stateat', partition, offset)
        local views = redis.call('HGET', rk .. 'applied', partition)
        if views and tonumber(views) > tonumber(offset) then
          redis.call('ZADD', lag .. partition, 'NX', tonumber(offset) + 1, r[R.run_path])
        else
          redis.call('ZREM', lag .. partition, r[R.run_path])
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
