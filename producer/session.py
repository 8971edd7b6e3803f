"""``init`` and the module-level twins (``log``, ``define_metric``, ``finish``) acting on the current run.

The current run is the most recently started run of this process that is still open. At exit every
open run is finished: exit code 0, or 1 if the program is ending on an unhandled exception
(``sys.excepthook``).

Defaults from the environment: ``METRICFOLD_ENTITY`` (else "default"), ``METRICFOLD_PROJECT`` (else
"uncategorized", as W&B), ``METRICFOLD_RUN_ID`` (else a fresh id of 8 lowercase letters and digits),
``METRICFOLD_MODE`` ("online" | "offline" | "disabled"), ``METRICFOLD_SPOOL_DIR`` (else ./metricfold-spool); Kafka
settings from ``schemas.settings.Settings.from_env()``, limits from ``Limits.from_env()``. W&B's signatures
(``init(notes=, group=, job_type=, resume=, reinit=, dir=)``, ``log(commit=)``, W&B keywords ignored with a
warning): RULES.md §2, ``producer.wandb_options``.
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

from producer.run_log import warn_sync_ignored
from producer.runs import Run
from producer.sender import Sender, SenderOptions
from producer.spool_file import default_spool_dir
from producer.wandb_options import (
    check_reinit,
    check_resume,
    filter_config,
    run_exists,
    spool_directory,
    warn_ignored,
    warn_ignored_keywords,
)
from schemas.errors import MetricfoldError, RunNotFound, ValidationError
from schemas.limits import Limits, check_run_part
from schemas.run_fields import check_run_label, check_run_name, check_run_notes, check_tags, config_json
from schemas.settings import Settings

__all__ = ["current_run", "define_metric", "finish", "init", "log", "open_runs"]

log_ = logging.getLogger("metricfold.producer")

_lock = threading.Lock()
_open: list[Run] = []
_crashed = False
_hook_installed = False
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
MODES = ("online", "offline", "disabled")


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
    notes: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    config: Mapping[str, Any] | argparse.Namespace | None = None,
    config_include_keys: Iterable[str] | None = None,
    config_exclude_keys: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
    mode: str | None = None,
    resume: bool | str | None = None,
    reinit: bool | str | None = None,
    dir: str | Path | None = None,
    settings: Settings | None = None,
    limits: Limits | None = None,
    spool_dir: str | Path | None = None,
    sender_options: SenderOptions | None = None,
    **wandb_options: Any,
) -> Run:
    """Start (or, with an existing ``run_id``, attach to) a run and return it; sends RunStarted.

    ``mode="offline"`` writes every event to a spool file for ``metricfold sync``; online, events go to
    Kafka in the background, and to the spool if Kafka cannot be reached; ``mode="disabled"`` (W&B's, e.g. on
    ranks other than 0) sends nothing, writes no file and reads nothing, but checks every call as online does.
    ``dir`` (W&B's name) and ``spool_dir`` both name the spool directory. ``notes``, ``group`` and ``job_type``
    go to the run's meta (the last one given wins, as the name). W&B's ``config_include_keys`` /
    ``config_exclude_keys`` keep only, or drop, those config keys.

    ``resume`` (with ``id``), as W&B: None or False: start the run, or attach to it if the id exists (nothing
    is read); "allow" (and "auto", True): the same; "must": the run must exist, i.e. the consumer has folded
    it (read from Redis: RunNotFound if not, StoreUnavailable if Redis cannot be reached; needs an id);
    "never": ValidationError if it exists (read from Redis when an id is given). A resumed run's automatic
    steps count from 0 again (each producer counts its own: pass ``step=``).

    ``reinit``: None, False, "default" or "create_new": a new run beside the open ones (several may be
    open); True or "finish_previous": finish the open runs first; "return_previous": return the current run
    if one is open (the other arguments are then ignored). W&B's other keywords (``save_code``,
    ``anonymous``, ``sync_tensorboard``, a W&B ``settings`` object, ...) are accepted with a one-line warning
    that they are ignored; any other keyword is a TypeError.
    """
    warn_ignored_keywords(wandb_options, stacklevel=2)
    if settings is not None and not isinstance(settings, Settings):  # wandb.Settings(...) or a dict of them
        warn_ignored("init", "settings", stacklevel=2)
        settings = None
    reinit_mode, resume_mode = check_reinit(reinit), check_resume(resume)
    if reinit_mode == "return_previous" and (previous := current_run()) is not None:
        return previous
    if run_id is not None and id is not None and run_id != id:
        raise ValidationError(f"run_id={run_id!r} and id={id!r} disagree: give one of them")
    spool_path = spool_directory(dir, spool_dir)
    env = os.environ
    entity = check_run_part("entity", entity or env.get("METRICFOLD_ENTITY") or "default")
    project = check_run_part("project", project or env.get("METRICFOLD_PROJECT") or "uncategorized")
    given_id = run_id or id or env.get("METRICFOLD_RUN_ID")
    if resume_mode == "must" and not given_id:
        raise ValidationError("resume='must' needs the id of the run to resume: init(id=..., resume='must')")
    run_id = check_run_part("run_id", given_id or _new_run_id())
    mode = mode or env.get("METRICFOLD_MODE") or "online"
    if mode not in MODES:
        raise ValidationError(f"mode must be 'online', 'offline' or 'disabled', got {mode!r}", value=mode)
    limits = limits or Limits.from_env()
    name = check_run_name(name, limits)
    texts = {
        "notes": check_run_notes(notes, limits),
        "group": check_run_label(group, "group", limits),
        "job_type": check_run_label(job_type, "job_type", limits),
    }
    config_dict, config_text = config_json(filter_config(config, config_include_keys, config_exclude_keys))
    tag_list = check_tags(tags, limits)
    settings = settings or Settings.from_env()
    path = f"{entity}/{project}/{run_id}"
    if resume_mode == "must" and mode != "disabled" and not run_exists(settings, path, "must"):
        raise RunNotFound(f"resume='must' but run {path} does not exist (the consumer has not folded it)")
    if resume_mode == "never" and given_id and mode != "disabled" and run_exists(settings, path, "never"):
        raise ValidationError(f"resume='never' but run {path} exists: give another id, or resume='allow'")
    if reinit_mode == "finish_previous":
        for previous_run in reversed(open_runs()):
            previous_run.finish()
    producer_id = str(uuid.uuid4())
    sender = Sender(
        run_path=path,
        producer_id=producer_id,
        settings=settings,
        limits=limits,
        mode=mode,
        spool_dir=spool_path if spool_path is not None else default_spool_dir(),
        options=sender_options or SenderOptions(),
    )
    try:
        run = Run(
            entity=entity,
            project=project,
            run_id=run_id,
            name=name,
            config_json=config_text,
            config=config_dict,
            tags=tag_list,
            mode=mode,
            limits=limits,
            sender=sender,
            producer_id=producer_id,
            on_finish=_forget,
            **texts,
        )
    except BaseException:
        sender.close()
        raise
    _install_excepthook()
    with _lock:
        _open.append(run)
    return run


def _current_or_raise(what: str) -> Run:
    run = current_run()
    if run is None:
        raise MetricfoldError(f"producer.{what}() needs an open run: call producer.init() first")
    return run


def log(
    data: Mapping[str, Any], step: int | None = None, commit: bool | None = None, sync: bool | None = None
) -> None:
    """``current run.log(data, step, commit)``; W&B's ``sync`` is ignored with a warning."""
    run = _current_or_raise("log")
    if sync is not None:
        warn_sync_ignored(2)
    run.log(data, step, commit)


def define_metric(name: str, step_metric: str | None = None, **options: Any) -> None:
    """``current run.define_metric(name, step_metric, **options)``."""
    _current_or_raise("define_metric").define_metric(name, step_metric, **options)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """Finish the current run (no-op if there is none, as W&B); ``Run.finish``'s arguments."""
    run = current_run()
    if run is not None:
        run.finish(exit_code, quiet)
