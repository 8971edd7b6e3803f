-- KEYS: a run's summary, flat, meta and tensors hashes (keys.py; one hash slot). Reads the four in one atomic step.
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
        redis.call('HGETALL', KEYS[4])}
