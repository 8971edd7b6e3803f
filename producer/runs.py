"""``Run``: one producer attached to one run (RULES.md §2). ``init`` makes one; ``log`` (producer.run_log) is the hot path.

Every event carries the run path, this Run's producer id (a fresh uuid4 per Run, so several processes
or ranks writing one run never share one), a seq (0, 1, 2, ... per producer, no gaps) and ts_ms.

Steps (RULES.md §4 rule 14): ``log(d, step=s)`` uses s; ``log(d)`` uses this producer's next auto step,
which is the last step it logged + 1 (starting at 0), as in W&B. So after ``log(d, step=10)`` an auto
step is 11; after ``log(d, step=3)`` it is 4 again. Steps that go backwards are sent, never dropped.
``log(d, commit=False)`` (rule 21) logs at the step without moving on. ``notes``, ``group`` and ``job_type``
travel in RunStarted (None when not given).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any

from producer.definitions import define_metric_datum
from producer.delivery import SendReport, SpoolWarning
from producer.run_log import RunLog
from producer.sender import Sender
from producer.summaries import Summary
from producer.wandb_options import warn_ignored
from schemas.errors import MetricfoldError, ValidationError
from schemas.events import DEFINE_METRIC, RUN_FINISHED, RUN_STARTED, SUMMARY_UPDATE
from schemas.limits import Limits
from schemas.names import run_name

__all__ = ["Run"]

_time_ns = time.time_ns


class Run(RunLog):
    """An open run of this process. Use ``producer.init(...)`` rather than building one directly."""

    def __init__(
        self,
        *,
        entity: str,
        project: str,
        run_id: str,
        name: str | None,
        config_json: str,
        config: dict[str, Any],
        tags: list[str],
        mode: str,
        limits: Limits,
        sender: Sender,
        producer_id: str,
        on_finish: Callable[[Run], None] | None = None,
        notes: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
    ) -> None:
        self.entity, self.project, self.id = entity, project, run_id
        self.path = f"{entity}/{project}/{run_id}"
        # without a name: the one every reader makes up from the run id (schemas.names). Only a given name is
        # sent, so another process that attaches to a named run without one does not rename it.
        self.name = name if name is not None else run_name(run_id)
        self.config = config
        self.tags = tags
        self.notes, self.group, self.job_type = notes, group, job_type  # as given (None: not set)
        self.mode = mode
        self.limits = limits
        self.producer_id = producer_id
        self.summary = Summary(self._summary_update, limits)
        self.report: SendReport | None = None  #: set by finish()
        self._sender = sender
        self._on_finish = on_finish
        self._envelope = {"entity": entity, "project": project, "run_id": run_id, "producer_id": producer_id}
        self._seq = 0
        self._next_step = 0
        self._finished = False
        self._max_key_length = limits.max_key_length
        self._max_values = limits.max_values_per_event
        self._max_batch_events = sender.options.max_batch_events
        self._target_bytes = sender.options.target_batch_bytes
        self._record_limit = sender.record_limit
        texts = {"notes": notes, "group": group, "job_type": job_type}
        nbytes = 256 + len(config_json) + 4 * sum(len(t) for t in texts.values() if t is not None)
        self._event(RUN_STARTED, {"name": name, "config_json": config_json, "tags": tags, **texts}, nbytes)

    def __repr__(self) -> str:
        return f"<Run {self.path} producer={self.producer_id} {'finished' if self._finished else 'open'}>"

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def step(self) -> int:
        """The step the next ``log()`` without ``step=`` will use."""
        return self._next_step

    # -- other events ----------------------------------------------------------------------------------

    def _event(self, name: str, fields: dict[str, Any], nbytes: int) -> None:
        """Append one whole event (it closes the open LogBlock, so order with logs is kept)."""
        self._check_record_size(nbytes)
        sender = self._sender
        with sender.lock:
            pending = self._pending_with_room_locked(nbytes)
            if pending.events == 0:
                sender.started_locked()
            seq = self._seq
            self._seq = seq + 1
            datum = {**self._envelope, "seq": seq, "ts_ms": _time_ns() // 1_000_000, **fields}
            pending.add_event(name, datum, nbytes)
            if pending.nbytes >= self._target_bytes:
                sender.seal_locked()

    def _summary_update(self, sets: dict[str, Any], removes: list[str], nbytes: int) -> None:
        self._event(SUMMARY_UPDATE, {"set": sets, "remove": removes}, nbytes)

    def define_metric(
        self,
        name: str,
        step_metric: str | None = None,
        *,
        step_sync: bool | None = None,
        hidden: bool = False,
        summary: str | list[str] | None = None,
        objective: str | None = None,
        goal: str | None = None,
        overwrite: bool = False,
        at_best: str | list[str] | tuple[str, ...] | None = None,
    ) -> None:
        """Define how *name* (a display path; '*' globs) is summarised: ``summary="min,max"`` or a list of
        min, max, mean, first, last, best, none; ``best`` needs ``objective`` (or W&B's ``goal``)
        "minimize" | "maximize". ``at_best`` (with ``best``): names or globs of the keys whose values this
        producer logged at the best step are shown beside it, e.g. ``define_metric("val/acc", summary="best",
        objective="maximize", at_best=["val/loss", "val/f1"])`` (RULES.md §4 rule 20). ``step_sync`` is
        accepted for W&B compatibility and has no effect."""
        fields = define_metric_datum(
            name,
            step_metric=step_metric,
            hidden=hidden,
            summary=summary,
            objective=objective,
            goal=goal,
            overwrite=overwrite,
            limits=self.limits,
            at_best=at_best,
        )
        self._event(DEFINE_METRIC, fields, 512 + 4 * (len(fields["name"]) + sum(map(len, fields["at_best"]))))

    # -- finishing -------------------------------------------------------------------------------------

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """Send RunFinished, flush everything and wait for Kafka's acks (or spool). Safe to call twice.
        ``exit_code`` None is 0 (W&B's default); W&B's ``quiet`` is ignored with a warning."""
        if quiet is not None:
            warn_ignored("finish", "quiet", stacklevel=2)
        if self._finished:
            return
        if exit_code is None:
            exit_code = 0
        if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not -(2**31) <= exit_code < 2**31:
            raise ValidationError(f"exit_code must be a 32-bit int, got {exit_code!r}", value=exit_code)
        self._event(RUN_FINISHED, {"exit_code": exit_code}, 128)
        with self._sender.lock:
            self._finished = True
        self.report = report = self._sender.close()
        if self._on_finish is not None:
            self._on_finish(self)
        if report.records_spooled:
            warnings.warn(
                SpoolWarning(
                    f"{report.records_spooled} record(s) of run {self.path} were written to the spool file "
                    f"{report.spool_path} ({report.reason}); publish them with "
                    f"`metricfold sync {report.spool_path.parent if report.spool_path else '.'}`"
                ),
                stacklevel=2,
            )
        if report.errors:
            raise MetricfoldError(f"{report.errors} batch(es) of run {self.path} could not be sent (see the log)")

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

