-- KEYS: 1 the project's `runs` index, 2 its `paths` set, 3 the `by:` index of the sort path (absent: sort by last
-- update) (keys.py; one hash slot). ARGV: 1 '1' descending / '0' ascending, 2 offset, 3 limit, 4 the sort path.
-- One page of a project's run ids from its sorted sets, in one atomic step (read-only: FCALL_RO).
-- Returns -1 (no such project: no run in its index), -2 (no such sort path), or
-- {total in the sort index, runs in the project, {run_id, ...}, the project's numeric flat paths (the column picker)}.
local runs = redis.call('ZCARD', KEYS[1])
if runs == 0 then return -1 end
local zkey = KEYS[1]
if #KEYS > 2 then
  if redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 0 then return -2 end
  zkey = KEYS[3]
end
local first = tonumber(ARGV[2])
local last = first + tonumber(ARGV[3]) - 1
local ids
if ARGV[1] == '1' then ids = redis.call('ZREVRANGE', zkey, first, last) else ids = redis.call('ZRANGE', zkey, first, last) end
return {redis.call('ZCARD', zkey), runs, ids, redis.call('SMEMBERS', KEYS[2])}
