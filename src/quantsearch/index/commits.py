"""The commit protocol: a segment's files first, then the one catalog transaction that lists them.

A crash before the transaction commits leaves orphan files (removed by the next writer); a failed
transaction removes them at once, unless the catalog says the segment did commit after all. The
transaction bodies of ``add`` and ``compact`` are written here so that each write is one short chain:
encode -> write files -> commit -> extend the in-memory state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..exceptions import DuplicateIdError, QuantsearchError
from ..kernels import gather_rows
from .catalog import Catalog, Segment
from .pipeline import IndexView
from .storage import SegmentStore


def commit_segment(
    catalog: Catalog, store: SegmentStore, segment: Segment, body: Callable[[sqlite3.Connection], None]
) -> None:
    """Run ``body`` in the transaction that commits ``segment``'s (already written) files."""
    try:
        with catalog.transaction() as db:  # the commit point
            body(db)
    except Exception as exc:
        if not _committed(catalog, segment.seg_id):  # never remove the files of a committed segment
            store.discard(segment)
        if isinstance(exc, sqlite3.IntegrityError):  # ids are checked first: only a foreign writer
            raise DuplicateIdError(f"an id of the batch is already in the index: {exc}") from None
        raise


def _committed(catalog: Catalog, seg_id: int) -> bool:
    """Whether the catalog lists ``seg_id``; True when that cannot be read (the safe answer: files
    are kept, and the next writer removes them if they turn out to be orphans)."""
    try:
        return any(s.seg_id == seg_id for s in catalog.segments())
    except QuantsearchError:
        return True


def insert_batch(
    catalog: Catalog,
    segment: Segment,
    ids: Sequence[int | str],
    texts: Sequence[str | None],
    metadata: Sequence[str | None],
    *,
    int_ids: bool,
) -> Callable[[sqlite3.Connection], None]:
    """The transaction body of an add: the segment row, the documents, and the next auto id."""

    def body(db: sqlite3.Connection) -> None:
        start = segment.start_row
        Catalog.insert_segment(db, segment)
        Catalog.insert_docs(db, zip(range(start, start + segment.n_rows), ids, texts, metadata, strict=True))
        if int_ids:  # never lower it: auto ids must stay above every id given
            next_id = max(catalog.next_id(), max(int(i) for i in ids) + 1)
            Catalog.set_meta(db, "next_id", str(next_id))

    return body


def swap_segments(
    segment: Segment, live: np.ndarray, generation: int
) -> Callable[[sqlite3.Connection], None]:
    """The transaction body of a compaction: one segment replaces all, rows renumbered in order."""

    def body(db: sqlite3.Connection) -> None:
        Catalog.replace_segments(db, segment)
        Catalog.renumber_rows(db, zip(range(live.size), live.tolist(), strict=True))
        Catalog.set_meta(db, "generation", str(generation + 1))

    return body


def live_chunks(
    view: IndexView, live: np.ndarray, tiers: Iterable[str], candidate: str, chunk_rows: int
) -> dict[str, Iterable[np.ndarray]]:
    """Per tier, the codes of the ``live`` rows in chunks of ``chunk_rows`` (bounded memory)."""

    def rows_of(name: str) -> Iterable[np.ndarray]:
        for i in range(0, live.size, chunk_rows):
            rows = live[i : i + chunk_rows]
            if name == candidate:
                yield view.codes[rows]
            else:
                yield gather_rows(list(view.rescore[name].arrays), view.starts, rows)

    chunks: dict[str, Any] = {name: rows_of(name) for name in tiers}
    return chunks
