
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
