"""The in-memory state of an open index and the immutable views searches run on.

:class:`IndexState` holds what the committed segments put in memory: the candidate codes in one
growing RAM buffer, the memory maps of the rescoring tiers, the validity mask and the candidate stage.
Every change (load, append after a commit, delete) publishes a new :class:`~.pipeline.IndexView`;
a search keeps the view it started with, so writers never disturb it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..exceptions import CorruptIndexError
from ..kernels.prefetch import ReadAhead
from ..quantization import Quantizer
from .catalog import Catalog, Segment, id_dtype
from .manifest import Manifest
from .pipeline import IndexView, TierView
from .stages import CandidateStage, candidate_stage_from_config
from .storage import SegmentStore

T = TypeVar("T")


def retry_stale(catch_up: Callable[[], bool], call: Callable[[], T], attempts: int = 3) -> T:
    """``call()``; when it finds files missing or changed, ``catch_up()`` with the catalog and try again.

    Another process's compaction removes the segment files an older view names: that is a stale
    view, not a damaged index. The error stands when catching up changes nothing (then the catalog
    itself names the missing files) or after ``attempts`` tries.
    """
    for _ in range(attempts - 1):
        try:
            return call()
        except CorruptIndexError:
            if not catch_up():
                raise
    return call()


class IndexState:
    """The committed segments of one index, in memory (built by :meth:`load`)."""

    view: IndexView

    def __init__(
        self,
        store: SegmentStore,
        manifest: Manifest,
        tiers: dict[str, Quantizer],
        stage: CandidateStage,
        segments: list[Segment],
        generation: int,
    ) -> None:
        self._store = store
        self._candidate = manifest.candidate_tier.name
        self._rescore = manifest.rescore_tiers
        self.tiers = tiers
        self.stage = stage
        self.segments = segments
        self.generation = generation
        self._codes = np.empty((0, 0), np.uint8)
        # (capacity,) id of each row (integer ids only): int32 while every id fits, else int64
        self._ids: np.ndarray | None = None
        self.data_version = 0  # the catalog's data_version the published ids are current for
        self._arrays: dict[str, list[np.ndarray]] = {}
        self._readahead: dict[str, ReadAhead] = {}  # per tier, carried from view to view

    @classmethod
    def load(
        cls, store: SegmentStore, manifest: Manifest, tiers: dict[str, Quantizer], catalog: Catalog
    ) -> IndexState:
        """Read the committed segments (one catalog snapshot) and publish a view of them.

        An index with integer ids also keeps the id of every row in RAM (4 bytes a row while every
        id fits in 32 bits, else 8), so that a search without payload maps its rows to ids without
        asking the catalog (see :attr:`~.pipeline.IndexView.ids`)."""
        read = catalog.state(with_ids=manifest.id_type == "int")
        cand = tiers[manifest.candidate_tier.name]
        stage = candidate_stage_from_config(manifest.candidate_stage, cand)
        state = cls(store, manifest, tiers, stage, read.segments, read.generation)
        loaded = store.load(read.segments, tiers, state._candidate)
        if read.docs is None or read.docs[0].shape[0] != loaded.n_rows:
            raise CorruptIndexError(f"catalog of {store.root} lists rows outside the stored segments")
        valid, ids, n_live = read.docs
        if cand.is_fitted:
            stage.load(store.root, loaded.codes[: loaded.n_rows], generation=read.generation)
        state._codes, state._arrays, state._ids = loaded.codes, loaded.arrays, ids
        state.data_version = read.version[0]
        state._publish(loaded.n_rows, valid, n_live)
        return state

    @property
    def n_rows(self) -> int:
        return int(self.view.codes.shape[0])

    def next_segment(self) -> tuple[int, int]:
        """``(seg_id, start_row)`` of the next segment to write."""
        return max((s.seg_id for s in self.segments), default=0) + 1, sum(s.n_rows for s in self.segments)

    def append(
        self, segment: Segment, codes: dict[str, np.ndarray], ids: list[int | str] | None = None
    ) -> None:
        """Extend the state after a commit of this process (amortised growth of the RAM buffers);
        ``ids`` are the segment's document ids (kept for an index with integer ids)."""
        old = self.n_rows
        new = old + segment.n_rows
        if new > self._codes.shape[0]:
            capacity = max(new, int(self._codes.shape[0] * 1.5))
            buf = np.empty((capacity, codes[self._candidate].shape[1]), np.uint8)
            buf[:old] = self._codes[:old]
            self._codes = buf
        self._codes[old:new] = codes[self._candidate]
        if self._ids is not None:
            if ids is None or len(ids) != segment.n_rows:
                self._ids = None  # not known here: searches read ids from the catalog
            else:
                values = np.asarray(ids, np.int64)
                dtype = id_dtype(self._ids.dtype, values)
                if new > self._ids.shape[0] or dtype != self._ids.dtype:
                    grown = np.zeros(max(new, self._codes.shape[0]), dtype)  # the codes' capacity
                    grown[:old] = self._ids[:old]
                    self._ids = grown
                # rows [old, new) were never published: searches in flight do not read them
                self._ids[old:new] = values
        valid = np.zeros(new, bool)  # copied, not grown in place: searches in flight keep the old mask
        valid[:old] = self.view.valid
        valid[old:new] = True
        self.segments = [*self.segments, segment]
        for name in self._rescore:
            mapped = self._store.open_file(segment, name, self.tiers[name], in_ram=False)
            self._arrays[name] = [*self._arrays[name], mapped]
        self.stage.added(self._store.root, self._codes[:new], old)
        self._publish(new, valid, self.view.n_live + segment.n_rows)

    def mark_current(self, data_version: int) -> None:
        """The catalog at ``data_version`` holds what this state holds: publish that in the view."""
        if data_version != self.data_version:
            self.data_version = data_version
            view = self.view
            self._publish(int(view.codes.shape[0]), view.valid, view.n_live)

    def delete(self, rows: np.ndarray) -> None:
        """Mask deleted rows (int64) in a new view."""
        valid = self.view.valid.copy()
        valid[rows] = False
        self._publish(valid.shape[0], valid, self.view.n_live - int(rows.size))

    def _publish(self, n_rows: int, valid: np.ndarray, n_live: int) -> None:
        """Swap in a new immutable view; searches in flight keep the one they started with."""
        starts = np.asarray([s.start_row for s in self.segments], np.int64)
        for name in self._rescore:
            old = self._readahead.get(name)
            arrays = self._arrays[name]
            self._readahead[name] = old.extended(arrays) if old is not None else ReadAhead(arrays)
        rescore = {
            name: TierView(name, self.tiers[name], tuple(self._arrays[name]), self._readahead[name])
            for name in self._rescore
        }
        self.view = IndexView(
            stage=self.stage,
            codes=self._codes[:n_rows],
            valid=valid[:n_rows],
            n_live=n_live,
            starts=starts,
            rescore=rescore,
            generation=self.generation,
            ids=None if self._ids is None else self._ids[:n_rows],
            data_version=self.data_version,
        )
