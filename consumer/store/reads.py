"""The store's public read interface: what `producer.Api` and the web page read, and nothing else.

``consumer.store.open_reader(settings)`` opens it (a `Store` seen through `StoreReader`); close it when done, or use
it as a context manager. Every read resolves the active generation and is one atomic step (consumer/store/reader.py
says how); the errors are the store's: RunNotFound, ValidationError, StoreUnavailable, ConfigError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    from consumer.store.reader import TablePage
    from schemas.filters import Filter
    from schemas.settings import Settings

__all__ = ["StoreReader"]


class StoreReader(Protocol):
    """The reads of one namespace's Redis state that `Api()` and the web page make."""

    @property
    def settings(self) -> Settings: ...

    def read_run(self, run_path: str) -> dict[str, Any]:
        """generation, summary, flat, meta and tensors (display path -> sha256) of one run; RunNotFound if absent."""
        ...

    def read_blob(self, run_path: str, sha: str, *, generation: str | None = None) -> bytes | None:
        """The .npy bytes of a run's tensor (by its sha256) in *generation* (default: the active one); None if gone."""
        ...

    def read_table(
        self,
        project_path: str,
        *,
        sort: str | None = None,
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        columns: Sequence[str] = (),
        where: Filter | None = None,
    ) -> TablePage:
        """A page of a project's runs sorted by last update (*sort* None or schemas.filters.BY_UPDATE) or by a
        numeric flat path; RunNotFound for an unknown project, ValidationError for a path the project has no number
        at. *where* (schemas.filters) keeps the runs that pass it (`total` counts them); a path in it the project
        lacks matches no run."""
        ...

    def read_projects(self) -> tuple[str | None, dict[str, int], dict[str, int]]:
        """(active generation, {entity/project: number of runs}, stats)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...
