-- KEYS: 1 the project's `runs` index, 2 its `paths` set, 3 the sort index (a `by:` index, or `runs` again to sort
-- by last update), then the keys the filter reads (`by:` indexes, index sets: consumer/store/indexes.py; one slot).
-- ARGV: 1 '1' descending / '0' ascending, 2 offset, 3 limit, 4 the sort path ('' = last update), 5 the filter as
-- JSON: {"a": [..]} all of, {"o": [..]} any of, {"z": KEYS index of a `by:` index, "r": [[min, max], ..]} a score
-- in one of the ranges (ZRANGEBYSCORE syntax), {"s": [KEYS indexes of index sets], "x": negated} in one of the
-- sets (x: in none, of the project's runs), 6 '1' when every match has a number at the sort path.
-- One page of the runs that pass the filter, in one atomic step (read-only: FCALL_RO), never a temporary key: the
-- cheapest part of an AND makes the candidates (ZRANGEBYSCORE, SMEMBERS), the others test them (ZSCORE,
-- SISMEMBER), the most selective first. Returns -1 (no such project), -2 (no such sort path), or
-- {matches in the sort index, runs in the project, {run_id, ...}, the project's numeric flat paths}.
local runs = redis.call('ZCARD', KEYS[1])
if runs == 0 then return -1 end
if ARGV[4] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 0 then return -2 end
local function number(text)
  if text == 'inf' or text == '+inf' then return math.huge elseif text == '-inf' then return -math.huge end
  return tonumber(text)
end
local function prepare(node)  -- bounds as numbers, and `est`: what making the node's candidates costs
  if node.z then
    node.key, node.b, node.est = KEYS[node.z], {}, 0
    for i, r in ipairs(node.r) do
      local lo, hi = r[1], r[2]
      local lx, hx = string.sub(lo, 1, 1) == '(', string.sub(hi, 1, 1) == '('
      node.b[i] = {number(lx and string.sub(lo, 2) or lo), lx, number(hx and string.sub(hi, 2) or hi), hx}
      node.est = node.est + redis.call('ZCOUNT', node.key, lo, hi)
    end
  elseif node.s then
    node.pos = 0  -- the members of its sets
    for _, k in ipairs(node.s) do node.pos = node.pos + redis.call('SCARD', KEYS[k]) end
    node.est = node.x and runs or node.pos
  else
    local all = node.a ~= nil
    node.kids = node.a or node.o
    node.est = (all and #node.kids > 0) and math.huge or 0
    for _, kid in ipairs(node.kids) do
      prepare(kid)
      if all then node.est = math.min(node.est, kid.est) else node.est = node.est + kid.est end
    end
    if all and #node.kids == 0 then node.est = runs end
    table.sort(node.kids, function(p, q) return p.est < q.est end)
  end
end
local function test(node, id)
  if node.set then return (node.set[id] == true) ~= (node.x == true) end
  if node.z then
    local score = redis.call('ZSCORE', node.key, id)
    if not score then return false end
    local v = number(score)
    for _, b in ipairs(node.b) do
      if (v > b[1] or (v == b[1] and not b[2])) and (v < b[3] or (v == b[3] and not b[4])) then return true end
    end
    return false
  elseif node.s then
    for _, k in ipairs(node.s) do
      if redis.call('SISMEMBER', KEYS[k], id) == 1 then return not node.x end
    end
    return node.x
  end
  local all = node.a ~= nil
  for _, kid in ipairs(node.kids) do
    if test(kid, id) ~= all then return not all end
  end
  return all
end
local function union(lists)
  local out, seen = {}, {}
  for _, list in ipairs(lists) do
    for _, id in ipairs(list) do
      if not seen[id] then seen[id] = true; out[#out + 1] = id end
    end
  end
  return out
end
local function matches(node)  -- the ids that pass *node*, each once
  if node.z then
    local lists = {}
    for i, r in ipairs(node.r) do lists[i] = redis.call('ZRANGEBYSCORE', node.key, r[1], r[2]) end
    if #lists == 1 then return lists[1] end
    return union(lists)
  elseif node.s and not node.x then
    local lists = {}
    for i, k in ipairs(node.s) do lists[i] = redis.call('SMEMBERS', KEYS[k]) end
    if #lists == 1 then return lists[1] end
    return union(lists)
  elseif node.o then
    local lists = {}
    for i, kid in ipairs(node.kids) do lists[i] = matches(kid) end
    return union(lists)
  end
  local candidates, tests
  if node.s then
    candidates, tests = redis.call('ZRANGE', KEYS[1], 0, -1), {node}
  elseif #node.kids == 0 then
    return redis.call('ZRANGE', KEYS[1], 0, -1)
  else
    candidates, tests = matches(node.kids[1]), {}  -- the cheapest (kids are sorted by est)
    for i = 2, #node.kids do tests[#tests + 1] = node.kids[i] end
    if candidates[1] == nil then return candidates end
  end
  for _, t in ipairs(tests) do  -- a test part about as small as the candidates: its members once, then table lookups
    if (t.z and t.est or t.pos or math.huge) <= 2 * #candidates then
      t.set = {}
      if t.z then
        for _, id in ipairs(matches(t)) do t.set[id] = true end
      else
        for _, k in ipairs(t.s) do
          for _, id in ipairs(redis.call('SMEMBERS', KEYS[k])) do t.set[id] = true end
        end
      end
    end
  end
  local out = {}
  for _, id in ipairs(candidates) do
    local pass = true
    for _, t in ipairs(tests) do
      if not test(t, id) then pass = false; break end
    end
    if pass then out[#out + 1] = id end
  end
  return out
end
local tree = cjson.decode(ARGV[5])
prepare(tree)
local ids = matches(tree)
local sort_key, desc = KEYS[3], ARGV[1] == '1'
local first, want = tonumber(ARGV[2]), tonumber(ARGV[3])
local paths = redis.call('SMEMBERS', KEYS[2])
if ids[1] == nil or want <= 0 then return {#ids, runs, {}, paths} end
-- the page: walk the sort index in order keeping the matches (when they are dense), or score the matches and sort
local member, scores, total, size, page = {}, nil, #ids, redis.call('ZCARD', sort_key), {}
if ARGV[4] ~= '' and ARGV[6] ~= '1' and 2 * #ids >= size then  -- many matches: one pass over the sort index
  for _, id in ipairs(ids) do member[id] = true end
  local order
  if desc then order = redis.call('ZREVRANGE', sort_key, 0, -1) else order = redis.call('ZRANGE', sort_key, 0, -1) end
  total = 0
  for _, id in ipairs(order) do
    if member[id] then
      total = total + 1
      if total > first and #page < want then page[#page + 1] = id end
    end
  end
  return {total, runs, page, paths}
elseif ARGV[4] ~= '' and ARGV[6] ~= '1' then  -- a match may lack the sort path: score them all to count those with it
  scores, total = {}, 0
  for _, id in ipairs(ids) do
    local s = redis.call('ZSCORE', sort_key, id)
    if s then total = total + 1; scores[#scores + 1] = {number(s), id}; member[id] = true end
  end
else
  for _, id in ipairs(ids) do member[id] = true end
end
if total == 0 or first >= total then return {total, runs, page, paths} end
if total * total > size * (first + want) then
  local seen, start, chunk = 0, 0, math.ceil((first + want) * size / total) + 32
  while #page < want and start < size do
    local batch
    if desc then batch = redis.call('ZREVRANGE', sort_key, start, start + chunk - 1)
    else batch = redis.call('ZRANGE', sort_key, start, start + chunk - 1) end
    for _, id in ipairs(batch) do
      if member[id] then
        if seen >= first then page[#page + 1] = id; if #page >= want then break end end
        seen = seen + 1
      end
    end
    start, chunk = start + chunk, chunk * 2
  end
  return {total, runs, page, paths}
end
if not scores then
  scores = {}
  for i, id in ipairs(ids) do scores[i] = {number(redis.call('ZSCORE', sort_key, id)), id} end
end
if desc then table.sort(scores, function(p, q) return p[1] > q[1] or (p[1] == q[1] and p[2] > q[2]) end)
else table.sort(scores, function(p, q) return p[1] < q[1] or (p[1] == q[1] and p[2] < q[2]) end) end
for i = first + 1, math.min(first + want, total) do page[#page + 1] = scores[i][2] end
return {total, runs, page, paths}
