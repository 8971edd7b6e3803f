"""W&B's ``init`` keywords beyond a run's own fields (RULES.md §2): ``resume``, ``reinit``, ``dir``, the config
filters, and the keywords metricfold accepts and ignores with a one-line warning, so a W&B script ports by
changing its import. A keyword W&B does not have stays a TypeError.

``resume`` follows W&B's table: None (and False) and ``"allow"`` (and ``"auto"``, True) start the run, or attach
to it when the id exists; ``"must"`` needs an id whose run the consumer has folded (read from Redis, through the
same lazy reader as ``producer.Api``: ``import producer`` still imports neither consumer nor redis);
``"never"`` refuses an id whose run exists.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from producer.api import open_store_reader
from schemas.errors import RunNotFound, StoreUnavailable, ValidationError
from schemas.settings import Settings

__all__ = [
    "IGNORED_INIT_KEYWORDS",
    "check_reinit",
    "check_resume",
    "filter_config",
    "run_exists",
    "spool_directory",
    "warn_ignored",
    "warn_ignored_keywords",
]

#: W&B's init keywords that have no meaning here: accepted, and a warning says they are ignored
IGNORED_INIT_KEYWORDS = frozenset({
    "allow_val_change", "anonymous", "force", "fork_from", "magic", "monitor_gym", "resume_from", "save_code",
    "sync_tensorboard", "tensorboard",
})
_RESUME = {None: None, False: None, True: "allow", "auto": "allow", "allow": "allow", "must": "must", "never": "never"}
_REINIT = {
    None: "create_new", False: "create_new", "default": "create_new", "create_new": "create_new",
    True: "finish_previous", "finish_previous": "finish_previous", "return_previous": "return_previous",
}


def warn_ignored(call: str, keyword: str, stacklevel: int) -> None:
    """One line: W&B's ``call(keyword=...)`` is ignored (*stacklevel* as ``warnings.warn``'s, from the caller)."""
    warnings.warn(f"{call}({keyword}=...) is W&B's and is ignored by metricfold", stacklevel=stacklevel + 1)


def warn_ignored_keywords(options: Mapping[str, Any], stacklevel: int) -> None:
    """``init``'s other keywords: W&B's (``IGNORED_INIT_KEYWORDS``) warn when given a value, others are a TypeError."""
    for keyword in options:
        if keyword not in IGNORED_INIT_KEYWORDS:
            raise TypeError(f"init() got an unexpected keyword argument {keyword!r}")
    for keyword, value in options.items():
        if value is not None:
            warn_ignored("init", keyword, stacklevel + 1)


def check_resume(resume: object) -> str | None:
    """``resume`` as None (start or attach), "allow", "must" or "never"."""
    if (isinstance(resume, (str, bool)) or resume is None) and resume in _RESUME:
        return _RESUME[resume]
    raise ValidationError(
        f"resume must be 'allow', 'must', 'never', 'auto', True, False or None, got {resume!r:.60}",
        key="resume",
        value=resume,
    )


def check_reinit(reinit: object) -> str:
    """``reinit`` as "create_new" (a new run beside the open ones: the default), "finish_previous" (finish
    the open runs first; also True) or "return_previous" (return the current run if one is open)."""
    if (isinstance(reinit, (str, bool)) or reinit is None) and reinit in _REINIT:
        return _REINIT[reinit]
    raise ValidationError(
        "reinit must be True, False, None, 'default', 'create_new', 'finish_previous' or 'return_previous', "
        f"got {reinit!r:.60}",
        key="reinit",
        value=reinit,
    )


def spool_directory(dir: str | Path | None, spool_dir: str | Path | None) -> Path | None:
    """W&B's ``dir=`` is metricfold's ``spool_dir=``: either, or both if they name the same directory."""
    chosen = [Path(d) for d in (dir, spool_dir) if d is not None]
    if len(chosen) == 2 and chosen[0].resolve() != chosen[1].resolve():
        raise ValidationError(
            f"dir={str(dir)!r} and spool_dir={str(spool_dir)!r} disagree: both name the spool directory, give one"
        )
    return chosen[0] if chosen else None


def filter_config(
    config: object, include: Iterable[str] | None, exclude: Iterable[str] | None
) -> object:
    """W&B's ``config_include_keys`` / ``config_exclude_keys``: keep only, or drop, those top-level config keys."""
    if include is None and exclude is None:
        return config
    if include is not None and exclude is not None:
        raise ValidationError("config_include_keys and config_exclude_keys cannot both be given")
    keys = include if include is not None else exclude
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise ValidationError(f"config_include_keys / config_exclude_keys must be a list of str, got {keys!r:.60}")
    wanted = set(keys)
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if not isinstance(config, Mapping):
        return config  # None, or not a dict: config_json says what is wrong
    return {k: v for k, v in config.items() if (k in wanted) == (include is not None)}


def run_exists(settings: Settings, path: str, resume: str) -> bool:
    """Whether the consumer has folded run *path* (read from Redis); StoreUnavailable, saying why it was
    needed, if Redis cannot be reached."""
    try:
        with open_store_reader(settings) as reader:
            reader.read_run(path)
    except RunNotFound:
        return False
    except StoreUnavailable as exc:
        raise StoreUnavailable(
            f"init(resume={resume!r}) must read run {path} from Redis to know whether it exists, and {exc}"
        ) from exc
    return True
