"""The Avro full names of metricfold's record types, spelled once for the SDK, the codec and the fold.

A Kafka record value is one of ``EVENT_TYPES``: a standalone event, or a ``BATCH`` whose items are events and
``LOG_BLOCK`` s (many ``LOG`` events of one producer in columns). Inside values, ``SUBTREE``, ``LIST`` and
``TENSOR`` are the union branches a wire value may take (see ``schemas.values``). ``SPOOL_RECORD`` frames a
record in the SDK's local spool file. The ``.avsc`` files beside this module define them.
"""

from __future__ import annotations

__all__ = [
    "BATCH",
    "DEFINE_METRIC",
    "EVENT_TYPES",
    "LIST",
    "LOG",
    "LOG_BLOCK",
    "RUN_FINISHED",
    "RUN_STARTED",
    "SPOOL_RECORD",
    "SUBTREE",
    "SUMMARY_UPDATE",
    "TENSOR",
]

RUN_STARTED = "metricfold.RunStarted"
LOG = "metricfold.Log"
DEFINE_METRIC = "metricfold.DefineMetric"
SUMMARY_UPDATE = "metricfold.SummaryUpdate"
RUN_FINISHED = "metricfold.RunFinished"
BATCH = "metricfold.Batch"
#: only inside a Batch
LOG_BLOCK = "metricfold.LogBlock"
#: the branches of a wire value
SUBTREE = "metricfold.Subtree"
LIST = "metricfold.List"
TENSOR = "metricfold.Tensor"
SPOOL_RECORD = "metricfold.SpoolRecord"

#: The top-level types a Kafka record value may hold.
EVENT_TYPES = (RUN_STARTED, LOG, DEFINE_METRIC, SUMMARY_UPDATE, RUN_FINISHED, BATCH)
