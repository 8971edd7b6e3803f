"""The parts of the consume loop (consumer/runner.py: class Consumer, the front):

    batch_fold.py    a batch's records grouped by run, decoded and folded into the cached states -> the runs' writes
    run_cache.py     the runs' fold states in memory: loading, evicting, when each is due for storing (STATE_EVERY_S)
    run_writer.py    the writes to Redis and what their results mean (a moved generation, lost writes)
    checkpoints.py   the Redis checkpoints this consumer knows, and seeking back to the resume points
    dead_letters.py  refused records to the dead-letter topic, once each; isolating the records at fault
    run_paths.py     run paths from record keys and decoded records
    report.py        ConsumeReport and BatchTiming (the metrics read them without importing the loop)
"""
