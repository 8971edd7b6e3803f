-- One project's part of a consumer batch (every key in one hash slot: keys.py).
-- KEYS: 1 the project's `retired` marker, 2 its `runs` index, 3 its `paths` set, 4 its stats hash, 5 its `seen`
--       hash (partition -> the offset after its last record applied), then the keys
--       ARGV[3] and the runs name by their KEYS index (lag sets, `by:` indexes, each run's RUN_PARTS and blobs,
--       the filter index sets a run leaves or enters,
--       and with checkpoints, the checkpoint hash and the topic's stats).
-- ARGV: 1 '1' = a live write, refused once the generation is retired ('' = do not check), 2 JSON array of runs,
--       3 JSON [{partition: lag set's KEYS index}, {numeric flat path: `by:` index's KEYS index}], 4 the project's
--       change channel, 5 the batch's checkpoints as JSON [checkpoint hash's KEYS index, topic stats' KEYS index,
--       [[partition, next offset, undecodable records, known checkpoint or ''], ..]] ('' = none in this call),
--       then each run's state in the order of the runs ('' = not stored this time), then the tensor blobs.
-- A run: a RunRecord (consumer/store/record.py), as a JSON array in its fields' order; `R` (put before this
-- script from that class) names the positions: r[R.offset]. Every number a string.
-- The views and the applied offset are written with every batch; the state, when the consumer sends it. A run
-- whose stored state is older than its views is in its project's lag set of the partition (scored by the first
-- offset the state lacks), so a consumer that starts over reads from there and folds the state up to the views.
-- Returns -2 when the generation was retired (a replay switched to another; nothing written), else one result
-- per run: 1 applied, 0 already applied (skipped), -1 the applied offset is not the expected one. Each run is
-- written as one step, and the whole call is atomic. A state is stored (1 or 0) unless Redis holds a newer one.
-- With checkpoints, returns {results, one `advance` result per checkpoint}; they advance only when no run got -1.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) then return -2 end
local runs = cjson.decode(ARGV[2])
local indexes = cjson.decode(ARGV[3])
local lag, by_key = indexes[1], indexes[2]
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
-- the sorted sets get one ZADD per call (and path), not one per run (and path); SADD of the paths likewise
local ranked, by, seen = {}, {}, {}
for i, r in ipairs(runs) do
  local run_id = r[R.run_id]
  local k = tonumber(r[R.first_key])
  local summary, flat, meta, tensors = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local applied_key, state_key, stateat_key = KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]
  local applied = redis.call('HGET', applied_key, r[R.partition])
  local state = ARGV[5 + i]
  if applied and tonumber(applied) >= tonumber(r[R.offset]) then
    out[i] = 0
  elseif (applied or '') ~= r[R.expected_prev] then
    out[i] = -1
  else
    hset(summary, r[R.summary_set]); hdel(summary, r[R.summary_del])
    hset(flat, r[R.flat_set]); hdel(flat, r[R.flat_del])
    hset(meta, r[R.meta_set]); hdel(meta, r[R.meta_del])
    for _, key in ipairs(r[R.index_out]) do redis.call('SREM', KEYS[tonumber(key)], run_id) end
    for _, key in ipairs(r[R.index_in]) do redis.call('SADD', KEYS[tonumber(key)], run_id) end
    hset(tensors, r[R.tensors_set]); hdel(tensors, r[R.tensors_del])
    local values = r[R.flat_set]
    for _, path in ipairs(r[R.numeric_set]) do
      local members = by[path]
      if not members then members = {}; by[path] = members end
      members[#members + 1] = values[path]; members[#members + 1] = run_id
    end
    for _, path in ipairs(r[R.numeric_del]) do redis.call('ZREM', KEYS[by_key[path]], run_id) end
    for _, blob in pairs(r[R.blobs]) do redis.call('SET', KEYS[tonumber(blob[1])], ARGV[tonumber(blob[2])]) end
    redis.call('HSET', applied_key, r[R.partition], r[R.offset])
    if state == '' and r[R.lacks_from] ~= '' then
      redis.call('ZADD', KEYS[lag[r[R.partition]]], 'NX', r[R.lacks_from], run_id)
    end
    ranked[#ranked + 1] = r[R.updated_ms]; ranked[#ranked + 1] = run_id
    events = events + tonumber(r[R.events]); dead = dead + tonumber(r[R.dead_letters])
    redis.call('PUBLISH', ARGV[4], run_id)
    out[i] = 1
    written = written + 1
  end
  if out[i] ~= -1 then
    local next_offset = tonumber(r[R.offset]) + 1
    if (seen[r[R.partition]] or -1) < next_offset then seen[r[R.partition]] = next_offset end
  end
  if out[i] ~= -1 and state ~= '' then
    local held = redis.call('HGET', stateat_key, r[R.partition])
    if not held or tonumber(held) < tonumber(r[R.state_at][r[R.partition]]) then
      redis.call('SET', state_key, state)
      for partition, offset in pairs(r[R.state_at]) do
        redis.call('HSET', stateat_key, partition, offset)
        local views = redis.call('HGET', applied_key, partition)
        if views and tonumber(views) > tonumber(offset) then
          redis.call('ZADD', KEYS[lag[partition]], 'NX', tonumber(offset) + 1, run_id)
        else
          redis.call('ZREM', KEYS[lag[partition]], run_id)
        end
      end
    end
  end
end
if written > 0 then
  each_chunk('ZADD', KEYS[2], ranked)
  local known = {}
  for path, members in pairs(by) do
    each_chunk('ZADD', KEYS[by_key[path]], members)
    known[#known + 1] = path
  end
  each_chunk('SADD', KEYS[3], known)
  redis.call('HINCRBY', KEYS[4], 'events', events)
  if dead > 0 then redis.call('HINCRBY', KEYS[4], 'dead_letters', dead) end
end
for partition, next_offset in pairs(seen) do
  if tonumber(redis.call('HGET', KEYS[5], partition) or '-1') < next_offset then
    redis.call('HSET', KEYS[5], partition, next_offset)
  end
end
if ARGV[5] == '' then return out end
local checkpoints, advanced = cjson.decode(ARGV[5]), {}
for _, result in ipairs(out) do
  if result == -1 then return {out, advanced} end
end
for i, c in ipairs(checkpoints[3]) do
  advanced[i] = advance(KEYS[checkpoints[1]], KEYS[checkpoints[2]], c[1], c[2], c[3], c[4])
end
return {out, advanced}
