-- KEYS: the meta hashes of some runs of one project, then the index sets they belong in (one slot: the project's).
-- ARGV: 1 JSON {"f": [the indexed meta fields], "r": [[run_id, KEYS index of its meta, [those fields' texts as
-- read ('' = not set)], [KEYS indexes of its index sets]], ...]}.
-- Puts each run into the index sets its meta says (consumer/store/indexes.py), in one atomic step with a check
-- that the meta still holds what the sets were computed from: a run whose meta changed since has been moved
-- between the sets by apply_runs already, and is left alone. Returns how many runs it put in their sets.
local call = cjson.decode(ARGV[1])
local fields = call.f
local done = 0
for _, run in ipairs(call.r) do
  local now = redis.call('HMGET', KEYS[run[2]], unpack(fields))
  local same = true
  for i = 1, #fields do
    if (now[i] or '') ~= run[3][i] then same = false break end
  end
  if same then
    for _, k in ipairs(run[4]) do redis.call('SADD', KEYS[k], run[1]) end
    done = done + 1
  end
end
return done
