"""The fold: decoded events in, a run's state and its views out. Pure code: no Kafka, no store, no clock.

    state = new_run_state("team", "vision", "3f2a9c")
    rejected = fold_record(state, (BATCH, {...}))   # mutates state in place; returns the refused events
    changes = take_changes(state)                   # what changed in the views since the last call
    data = state_to_bytes(state)                    # canonical bytes; state_from_bytes(data) reads them back

Which file to open (a record goes down this list; nothing imports upwards):

- records.py: ``fold_record``: run and producer checks, Batches, dedup, dispatch by event type.
- handlers.py: one prepare/apply pair per event type (Log, SummaryUpdate, DefineMetric, RunStarted, RunFinished).
- log_block.py: the LogBlock fast path; its checks in block_checks.py, its per-path stats in block_stats.py
  (small blocks, Python) and column_stats.py (numpy).
- mutations.py: the state changes handlers and LogBlocks share (log a value, add a block's stats, applied).
- changes.py: ``Changes`` and ``take_changes``; ``state_from_bytes`` (views handed out = the loaded state's).
- views.py: summary, flat, tensors and meta views: pure functions of the state.
- state.py: ``RunState``, ``new_run_state``, dedup memory, ``Rejected``, the canonical bytes.
- tracking.py: the change tracker each state carries: which keys changed, the views handed out.
- aggregates.py: a leaf's and a block's aggregates, and what each summary option shows (``OPTION_VIEWS``).
- at_best.py: rule 20, the values shown at a best's step (per producer stretches, per leaf snapshots).
- exact_sums.py, values.py (wire values -> plain values), definitions.py (``define_metric``), canonical.py.
- merge.py: merging consecutive LogBlock records before folding (a speed-up; same state).

The rules (RULES.md §4) are implemented where their numbers appear in these modules' docs.
"""

from consumer.fold.canonical import canonical_json
from consumer.fold.changes import Changes, state_from_bytes, take_changes
from consumer.fold.records import events_applied, fold_record
from consumer.fold.state import Rejected, RunState, new_run_state, state_to_bytes
from consumer.fold.views import flat_view, summary, tensors_view
from schemas.paths import display_path

__all__ = [
    "Changes",
    "Rejected",
    "RunState",
    "canonical_json",
    "display_path",
    "events_applied",
    "flat_view",
    "fold_record",
    "new_run_state",
    "state_from_bytes",
    "state_to_bytes",
    "summary",
    "take_changes",
    "tensors_view",
]
