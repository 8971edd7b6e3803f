"""``init`` and the module-level twins (``log``, ``define_metric``, ``finish``) acting on the current run.

The current run is the most recently started run of this process that is still open. At exit every
open run is finished: exit code 0, or 1 if the program is ending on an unhandled exception
(``sys.excepthook``).

Defaults from the environment: ``METRICFOLD_ENTITY`` (else "default"), ``METRICFOLD_PROJECT`` (else
"uncategorized", as W&B), ``METRICFOLD_RUN_ID`` (else a fresh id of 8 lowercase letters and digits),
``METRICFOLD_MODE`` ("online" | "offline"), ``METRICFOLD_SPOOL_DIR`` (else ./metricfold-spool); Kafka
settings from ``schemas.settings.Settings.from_env()``, limits from ``Limits.from_env()``.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import secrets
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from producer.runs import Run
from producer.sender import Sender, SenderOptions
from producer.spool_file import default_spool_dir
from schemas.errors import MetricfoldError, ValidationError
from schemas.limits import Limits, check_run_part
from schemas.run_fields import check_run_name, check_tags, config_json
from schemas.settings import Settings

__all__ = ["current_run", "define_metric", "finish", "init", "log", "open_runs"]

log_ = logging.getLogger("metricfold.producer")

_lock = threading.Lock()
_open: list[Run] = []
_crashed = False
_hook_installed = False
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
MODES = ("online", "offline")


def _new_run_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    global _crashed
    _crashed = True
    _previous_excepthook(exc_type, exc, tb)


_previous_excepthook = sys.excepthook


def _install_excepthook() -> None:
    global _hook_installed, _previous_excepthook
    if not _hook_installed:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook
        _hook_installed = True


@atexit.register
def _finish_open_runs() -> None:
    for run in reversed(open_runs()):
        try:
            run.finish(exit_code=1 if _crashed else 0)
        except Exception:  # at exit, report and go on with the other runs
            log_.exception("metricfold: could not finish run %s at exit", run.path)


def _forget(run: Run) -> None:
    with _lock:
        if run in _open:
            _open.remove(run)


def open_runs() -> list[Run]:
    """The runs of this process that are still open, oldest first."""
    with _lock:
        return list(_open)


def current_run() -> Run | None:
    """The most recently started run that is still open (None if there is none)."""
    with _lock:
        return _open[-1] if _open else None


def init(
    *,
    project: str | None = None,
    entity: str | None = None,
    run_id: str | None = None,
    id: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | argparse.Namespace | None = None,
    tags: Iterable[str] | None = None,
    mode: str | None = None,
    settings: Settings | None = None,
    limits: Limits | None = None,
    spool_dir: str | Path | None = None,
    sender_options: SenderOptions | None = None,
) -> Run:
    """Start (or, with an existing ``run_id``, attach to) a run and return it; sends RunStarted.

    ``mode="offline"`` writes every event to a spool file for ``metricfold sync``; online, events go to
    Kafka in the background, and to the spool if Kafka cannot be reached.
    """
    if run_id is not None and id is not None and run_id != id:
        raise ValidationError(f"run_id={run_id!r} and id={id!r} disagree: give one of them")
    env = os.environ
    entity = check_run_part("entity", entity or env.get("METRICFOLD_ENTITY") or "default")
    project = check_run_part("project", project or env.get("METRICFOLD_PROJECT") or "uncategorized")
    run_id = check_run_part("run_id", run_id or id or env.get("METRICFOLD_RUN_ID") or _new_run_id())
    mode = mode or env.get("METRICFOLD_MODE") or "online"
    if mode not in MODES:
        raise ValidationError(f"mode must be 'online' or 'offline', got {mode!r}", value=mode)
    limits = limits or Limits.from_env()
    name = check_run_name(name, limits)
    config_dict, config_text = config_json(config)
    tag_list = check_tags(tags, limits)
    settings = settings or Settings.from_env()
    producer_id = str(uuid.uuid4())
    path = f"{entity}/{project}/{run_id}"
    sender = Sender(
        run_path=path,
        producer_id=producer_id,
        settings=settings,
        limits=limits,
        offline=mode == "offline",
        spool_dir=Path(spool_dir) if spool_dir is not None else default_spool_dir(),
        options=sender_options or SenderOptions(),
    )
    try:
        run = _make_run(
            sender, entity, project, run_id, name, config_text, config_dict, tag_list, mode, limits, producer_id
        )
    except BaseException:
        sender.close()
        raise
    _install_excepthook()
    with _lock:
        _open.append(run)
    return run


def _make_run(
    sender: Sender,
    entity: str,
    project: str,
    run_id: str,
    name: str | None,
    config_json: str,
    config_dict: dict[str, Any],
    tag_list: list[str],
    mode: str,
    limits: Limits,
    producer_id: str,
) -> Run:
    return Run(
        entity=entity,
        project=project,
        run_id=run_id,
        name=name,
        config_json=config_json,
        config=config_dict,
        tags=tag_list,
        mode=mode,
        limits=limits,
        sender=sender,
        producer_id=producer_id,
        on_finish=_forget,
    )


def _current_or_raise(what: str) -> Run:
    run = current_run()
    if run is None:
        raise MetricfoldError(f"producer.{what}() needs an open run: call producer.init() first")
    return run


def log(data: Mapping[str, Any], step: int | None = None) -> None:
    """``current run.log(data, step)``."""
    _current_or_raise("log").log(data, step)


def define_metric(name: str, step_metric: str | None = None, **options: Any) -> None:
    """``current run.define_metric(name, step_metric, **options)``."""
    _current_or_raise("define_metric").define_metric(name, step_metric, **options)


def finish(exit_code: int = 0) -> None:
    """Finish the current run (no-op if there is none, as W&B)."""
    run = current_run()
    if run is not None:
        run.finish(exit_code)
