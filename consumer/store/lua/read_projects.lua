
-- KEYS: 1 <ns>:active; ARGV: 1 namespace. Every project with its number of runs, and the stats hash.
local gen = redis.call('GET', KEYS[1])
if not gen then return {false} end
local prefix = ARGV[1] .. ':' .. gen .. ':'
local out = {}
for i, project in ipairs(redis.call('SMEMBERS', prefix .. 'projects')) do
  out[i] = {project, redis.call('ZCARD', prefix .. 'project:{' .. project .. '}:runs')}
end
return {gen, out, redis.call('HGETALL', prefix .. 'stats')}
