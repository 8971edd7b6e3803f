
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
