
-- KEYS: 1 <ns>:active; ARGV: 1 namespace, 2 run path, 3 generation ('' = the active one)
-- Resolves the generation and reads the run's hashes in one atomic step, so a read never mixes generations.
local gen = ARGV[3]
if gen == '' then gen = redis.call('GET', KEYS[1]) end
if not gen then return {false} end
local base = ARGV[1] .. ':' .. gen .. ':run:{' .. ARGV[2] .. '}:'
return {gen, redis.call('HGETALL', base .. 'summary'), redis.call('HGETALL', base .. 'flat'),
        redis.call('HGETALL', base .. 'meta'), redis.call('HGETALL', base .. 'tensors')}
