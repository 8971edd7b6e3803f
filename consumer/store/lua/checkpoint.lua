
-- KEYS: 1 checkpoint hash, 2 stats; ARGV: 1 partition, 2 next offset, 3 undecodable records in the batch,
-- 4 the checkpoint the caller knows Redis held ('' = none). (Used when a batch's writes took more than one
-- apply_runs call, or there were none; otherwise apply_runs advances the checkpoints itself.)
return advance(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
