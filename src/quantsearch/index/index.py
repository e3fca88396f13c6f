"""The persistent tiered index: the lifecycle and search of one index directory.

:class:`Index` is a façade over parts with one job each: the typed :class:`~.manifest.Manifest`
(configuration), the :class:`~.catalog.Catalog` (ids, payload, committed segments; the commit point),
the :class:`~.storage.SegmentStore` (segment and state files, memory maps, orphans), the
:class:`~.stages.CandidateStage` (stage 1) and :func:`~.pipeline.run_pipeline` (stage 1 -> rescoring).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import as_float_matrix, check_number, check_positive_int
from ..exceptions import (
    CorruptIndexError,
    DuplicateIdError,
    IndexExistsError,
    IndexLockedError,
    InvalidArgumentError,
    NotFittedError,
    QuantsearchError,
    UnknownIdError,
)
from ..kernels import gather_rows
from ..quantization import Quantizer, make_quantizer, quantizer_from_config
from ..results import SearchResults
from . import layout
from .catalog import Catalog, Payload, Segment
from .documents import IdType, as_id_list, check_column, check_id, check_ids, dump_metadata
from .manifest import Manifest, TierSpec
from .pipeline import IndexView, TierView, run_pipeline
from .stages import candidate_stage_from_config
from .storage import SegmentStore, WriterLock

logger = logging.getLogger(__name__)

#: Oversampling used when a search does not name one. Measured on nfcorpus and scifact with
#: all-MiniLM-L6-v2 (docs/benchmarks.md): binary -> int8 rescoring at x10 keeps >= 99% of float32 NDCG@10.
DEFAULT_OVERSAMPLING = 10.0


class Index:
    """A compressed vector index stored in a directory.

    Tier 1 holds 1-bit codes in RAM and produces ``k x oversampling`` candidates (an exact scan by
    default); the rescoring tiers (int8 by default, optionally float16/float32) are memory-mapped
    files read only at the candidates' rows; ids, texts and metadata live in SQLite.

    Create with :meth:`create` (or :meth:`build` to calibrate and add in one call), reopen with
    :meth:`open`. Writes (``calibrate``, ``add``, ``delete``, ``compact``) take a lock on the
    directory, are atomic, and survive a crash: after a kill, the index holds every batch whose
    ``add`` returned.
    """

    # ---- construction ---------------------------------------------------------------------------
    def __init__(self, root: Path, manifest: Manifest, catalog: Catalog) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self.path = root
        self._manifest = manifest
        self._catalog = catalog
        self._store = SegmentStore(root)
        self._lock = WriterLock(root)
        self._write_lock = threading.RLock()
        self._embedder: Any = None
        self._tiers = self._store.load_quantizers(manifest)
        self._load_segments()

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int,
        *,
        rescore: Sequence[Any] | str | Quantizer | None = ("int8",),
        binary: Quantizer | None = None,
        truncate_dim: int | None = None,
        id_type: IdType = "int",
        model: str | None = None,
        backend: str | None = None,
        oversampling: float = DEFAULT_OVERSAMPLING,
        calibration: np.ndarray | None = None,
    ) -> Index:
        """Create an empty index directory.

        Parameters
        ----------
        path : path-like
            A directory that does not exist yet or is empty.
        dim : int
            Dimension of the float vectors that will be added and searched.
        rescore : sequence of precision spellings or Quantizers, or None
            Disk tiers used to rescore candidates, in stage order: ``"int8"`` (default),
            ``"uint8"``, ``"int4"``, ``"float16"``, ``"float32"``, or any named code.
            ``None`` or ``()`` keeps the candidate tier only.
        binary : Quantizer, optional
            Candidate-tier quantizer (packed byte codes kept in RAM; default :class:`BinaryQuantizer`).
        truncate_dim : int, optional
            Matryoshka truncation applied to every tier.
        id_type : {"int", "str"}
            Type of the document ids.
        model : str, optional
            Embedding model recorded so that text queries can be embedded; ``"default"`` means the
            bundled all-MiniLM-L6-v2.
        backend : str, optional
            How the model embeds (recorded so that queries are embedded the way the documents were).
        oversampling : float
            Default candidate multiplier of :meth:`search`.
        calibration : ndarray of shape (n, dim), float, optional
            Sample of document vectors to calibrate the quantizers on now (else call
            :meth:`calibrate` before the first :meth:`add`).
        """
        root = Path(path)
        dim = check_positive_int(dim, "dim")
        if id_type not in ("int", "str"):
            raise InvalidArgumentError(f"id_type must be 'int' or 'str', got {id_type!r}")
        oversampling = check_number(oversampling, "oversampling", minimum=1)
        if truncate_dim is not None:
            truncate_dim = check_positive_int(truncate_dim, "truncate_dim", maximum=dim)
        if backend is not None and not isinstance(backend, str):
            raise InvalidArgumentError(f"backend must be a string, got {backend!r}")
        candidate = make_quantizer(binary if binary is not None else "binary", truncate_dim=truncate_dim)
        if candidate.code_dtype != np.uint8:
            raise InvalidArgumentError(
                f"the candidate tier keeps packed byte codes in RAM; {candidate.name!r} codes are "
                f"{candidate.code_dtype} (use it as a rescoring tier)"
            )
        if rescore is None:
            rescore_specs: list[Any] = []
        elif isinstance(rescore, (str, Quantizer)):
            rescore_specs = [rescore]
        else:
            rescore_specs = list(rescore)
        quantizers = [candidate] + [make_quantizer(s, truncate_dim=truncate_dim) for s in rescore_specs]
        names = [q.name for q in quantizers]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"tiers must have distinct precisions, got {names}")
        tiers = tuple(
            TierSpec(q.name, "rescore" if i else "candidates", "mmap" if i else "ram", q.to_config())
            for i, q in enumerate(quantizers)
        )
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise IndexExistsError(f"{root} already exists and is not an empty directory")
        root.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.new(dim, id_type, tiers, oversampling=oversampling, model=model, backend=backend)
        catalog = Catalog(root / layout.CATALOG, create=True)
        manifest.write(root)  # the manifest is written last: it marks a complete index
        index = cls(root, Manifest.read(root), catalog)
        if calibration is not None:
            index.calibrate(calibration)
        return index

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Index:
        """Open an existing index; raises :class:`IndexNotFoundError` or :class:`CorruptIndexError`."""
        root = Path(path)
        manifest = Manifest.read(root)
        catalog = Catalog(root / layout.CATALOG)
        try:
            return cls(root, manifest, catalog)
        except BaseException:
            catalog.close()  # do not leak the connection of an index that failed to load
            raise

    @classmethod
    def build(
        cls,
        path: str | os.PathLike[str],
        vectors: np.ndarray,
        *,
        ids: Sequence[int | str] | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int = 100_000,
        **create_kwargs: Any,
    ) -> Index:
        """Create an index calibrated on ``vectors`` and add them (in batches of ``batch_size``)."""
        vectors = as_float_matrix(vectors, "vectors")
        if ids is not None and "id_type" not in create_kwargs:
            create_kwargs["id_type"] = "str" if len(ids) and isinstance(ids[0], str) else "int"
        index = cls.create(path, vectors.shape[1], calibration=vectors, **create_kwargs)
        for start in range(0, vectors.shape[0], batch_size):
            end = start + batch_size
            index.add(
                vectors[start:end],
                ids=None if ids is None else ids[start:end],
                texts=None if texts is None else texts[start:end],
                metadata=None if metadata is None else metadata[start:end],
            )
        return index

    @staticmethod
    def metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
        """What an index holds, read from its manifest and catalog only (no codes are loaded).

        Returns the settings and counts of :meth:`info` without the byte figures that need the
        segment files: ``path, format_version, count, rows, deleted, segments, dim, id_type, model,
        backend, calibrated, default_oversampling, tiers`` (name, role, storage, quantizer).
        """
        root = Path(path)
        manifest = Manifest.read(root)
        catalog = Catalog(root / layout.CATALOG)
        try:
            count, rows, segments = catalog.summary()
        finally:
            catalog.close()
        return {
            "path": str(root),
            "format_version": layout.FORMAT_VERSION,
            "count": count,
            "rows": rows,
            "deleted": rows - count,
            "segments": segments,
            "dim": manifest.dim,
            "id_type": manifest.id_type,
            "model": manifest.model,
            "backend": manifest.backend,
            "calibrated": all(t.state is not None for t in manifest.tiers),
            "default_oversampling": manifest.oversampling,
            "tiers": [
                {"name": t.name, "role": t.role, "storage": t.storage, "quantizer": t.quantizer}
                for t in manifest.tiers
            ],
        }

    # ---- properties -------------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        """The index's configuration (frozen)."""
        return self._manifest

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def id_type(self) -> IdType:
        return self._manifest.id_type

    @property
    def model(self) -> str | None:
        return self._manifest.model

    @property
    def backend(self) -> str | None:
        return self._manifest.backend

    @property
    def default_oversampling(self) -> float:
        return self._manifest.oversampling

    @property
    def tiers(self) -> dict[str, Quantizer]:
        """Quantizer of each tier, in stage order (the first is the candidate tier)."""
        return dict(self._tiers)

    @property
    def rescore_tiers(self) -> tuple[str, ...]:
        return self._manifest.rescore_tiers

    @property
    def is_calibrated(self) -> bool:
        return all(q.is_fitted for q in self._tiers.values())

    def __len__(self) -> int:
        return self._view.n_live

    def __repr__(self) -> str:
        tiers = "+".join(self._tiers)
        return f"Index({str(self.path)!r}, n={len(self)}, dim={self.dim}, tiers={tiers})"

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the writer lock and the catalog connection."""
        self._lock.release()
        self._catalog.close()

    # ---- the in-memory state ------------------------------------------------------------------------
    def _load_segments(self) -> None:
        """Read the committed segments and publish a view of them."""
        segments, live_rows, generation = self._catalog.state()
        cand = self._manifest.candidate_tier.name
        loaded = self._store.load(segments, self._tiers, cand)
        valid = np.zeros(loaded.n_rows, bool)
        live = np.asarray(live_rows, np.int64)
        if live.size and (live[0] < 0 or live[-1] >= loaded.n_rows):
            raise CorruptIndexError(f"catalog of {self.path} lists rows outside the stored segments")
        valid[live] = True
        self._stage = candidate_stage_from_config(self._manifest.candidate_stage, self._tiers[cand])
        if self._tiers[cand].is_fitted:
            self._stage.load(self.path, loaded.codes)
        self._segments = segments
        self._codes_buf = loaded.codes
        self._arrays = loaded.arrays
        self._generation = generation
        self._publish(loaded.n_rows, valid, int(live.size))

    def _publish(self, n_rows: int, valid: np.ndarray, n_live: int) -> None:
        """Swap in a new immutable view; searches in flight keep the one they started with."""
        starts = np.asarray([s.start_row for s in self._segments], np.int64)
        rescore = {
            name: TierView(name, self._tiers[name], tuple(self._arrays[name])) for name in self.rescore_tiers
        }
        self._view = IndexView(
            stage=self._stage,
            codes=self._codes_buf[:n_rows],
            valid=valid[:n_rows],
            n_live=n_live,
            starts=starts,
            rescore=rescore,
            generation=self._generation,
        )

    def _append_segment(self, segment: Segment, codes: dict[str, np.ndarray]) -> None:
        """Extend the in-memory state after a commit (amortised growth of the RAM buffer)."""
        cand = self._manifest.candidate_tier.name
        old = self._view.codes.shape[0]
        new = old + segment.n_rows
        if new > self._codes_buf.shape[0]:
            capacity = max(new, int(self._codes_buf.shape[0] * 1.5))
            buf = np.empty((capacity, codes[cand].shape[1]), np.uint8)
            buf[:old] = self._codes_buf[:old]
            self._codes_buf = buf
        self._codes_buf[old:new] = codes[cand]
        valid = np.zeros(new, bool)  # copied, not grown in place: searches in flight keep the old mask
        valid[:old] = self._view.valid
        valid[old:new] = True
        self._segments = [*self._segments, segment]
        for name in self.rescore_tiers:
            mapped = self._store.open_file(segment, name, self._tiers[name], in_ram=False)
            self._arrays[name] = [*self._arrays[name], mapped]
        self._stage.added(self.path, self._codes_buf[:new], old)
        self._publish(new, valid, self._view.n_live + segment.n_rows)

    # ---- writing ------------------------------------------------------------------------------------
    def _acquire_writer(self) -> None:
        """Take the directory's writer lock (once per Index object) and clean up after crashes."""
        if self._lock.held:
            return
        self._lock.acquire()
        try:
            self._refresh()
        except BaseException:
            self._lock.release()
            raise
        self._remove_orphans()

    def refresh(self) -> Index:
        """Catch up with what other processes committed since this index was opened.

        An open index is a snapshot for searching; writers catch up by themselves when they take
        the lock (writing from a stale view would reuse other writers' segment ids and rows).
        """
        with self._write_lock:
            self._refresh()
        return self

    def _refresh(self) -> None:
        manifest = Manifest.read(self.path)
        if manifest != self._manifest:
            self._tiers = self._store.load_quantizers(manifest)
            self._manifest = manifest
            self._load_segments()
        elif self._catalog.segments() != self._segments or self._catalog.count() != self._view.n_live:
            self._load_segments()

    def _remove_orphans(self) -> None:
        referenced = {ref["path"] for seg in self._catalog.segments() for ref in seg.files.values()}
        self._store.remove_orphans(referenced | self._manifest.state_files() | self._stage.files())

    def calibrate(self, sample: np.ndarray) -> Index:
        """Fit every tier's quantizer on a sample of document vectors and save the calibration.

        Only allowed while the index has never held a document (codes already written depend on
        the old calibration).

        Parameters
        ----------
        sample : ndarray of shape (n, dim), float
        """
        sample = as_float_matrix(sample, "calibration sample", dim=self.dim)
        with self._write_lock:
            self._acquire_writer()
            if self._segments:
                raise InvalidArgumentError("calibrate() is only allowed before the first add()")
            fitted = {
                name: quantizer_from_config(q.to_config()).fit(sample) for name, q in self._tiers.items()
            }
            states = {name: self._store.save_state(name, q) for name, q in fitted.items()}
            self._manifest.with_states(states).write(self.path)
            self._manifest = Manifest.read(self.path)
            self._remove_orphans()  # the previous calibration's state files, if any
            self._tiers = fitted
            self._load_segments()
        logger.info("calibrated %d tiers on %d vectors", len(fitted), sample.shape[0])
        return self

    def add(
        self,
        vectors: np.ndarray,
        ids: Sequence[int | str] | np.ndarray | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[int | str]:
        """Add a batch of documents atomically; returns their ids.

        Parameters
        ----------
        vectors : ndarray of shape (n, dim), float
        ids : sequence of n ints or n strs, optional
            Must match the index's ``id_type`` and be new. Integer indexes assign ids when omitted.
        texts : sequence of n str or None, optional
        metadata : sequence of n JSON-serialisable dicts or None, optional

        The batch is visible to searches, and durable, when this returns; if it raises, nothing of
        the batch was stored.
        """
        vectors = as_float_matrix(vectors, "vectors", dim=self.dim)
        n = vectors.shape[0]
        texts_list = check_column(texts, n, "texts", (str,))
        meta_list = dump_metadata(metadata, n)
        with self._write_lock:
            self._acquire_writer()  # first, so that a calibration by another writer is seen
            if not self.is_calibrated:
                raise NotFittedError(
                    "the index is not calibrated: call calibrate(sample) or pass calibration= to create"
                )
            id_list = self._new_ids(ids, n)
            codes = {name: q.encode(vectors) for name, q in self._tiers.items()}
            seg_id = max((s.seg_id for s in self._segments), default=0) + 1
            start = sum(s.n_rows for s in self._segments)
            files = self._store.write(seg_id, n, {name: [a] for name, a in codes.items()}, self._tiers)
            segment = Segment(seg_id, start, n, files)

            def commit(db: sqlite3.Connection) -> None:
                Catalog.insert_segment(db, segment)
                Catalog.insert_docs(
                    db, zip(range(start, start + n), id_list, texts_list, meta_list, strict=True)
                )
                if self.id_type == "int":  # never lower it: auto ids must stay above every id given
                    next_id = max(
                        int(self._catalog.meta("next_id", "0") or 0), max(int(i) for i in id_list) + 1
                    )
                    Catalog.set_meta(db, "next_id", str(next_id))

            self._commit(segment, commit)
            self._append_segment(segment, codes)
        return id_list

    def _commit(self, segment: Segment, body: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``body`` in the one transaction that commits ``segment``'s files; on failure remove them."""
        try:
            with self._catalog.transaction() as db:  # the commit point
                body(db)
        except Exception as exc:
            if not self._segment_committed(segment.seg_id):  # never remove the files of a committed one
                self._store.discard(segment)
            if isinstance(exc, sqlite3.IntegrityError):  # ids are checked first: only a foreign writer
                raise DuplicateIdError(f"an id of the batch is already in the index: {exc}") from None
            raise

    def _segment_committed(self, seg_id: int) -> bool:
        """Whether the catalog lists ``seg_id``; True when that cannot be read (the safe answer:
        files are kept, and the next writer removes them if they turn out to be orphans)."""
        try:
            return any(s.seg_id == seg_id for s in self._catalog.segments())
        except QuantsearchError:
            return True

    def _new_ids(self, ids: Sequence[int | str] | np.ndarray | None, n: int) -> list[int | str]:
        """The batch's ids: checked, unique, not yet in the index; assigned when omitted (int ids)."""
        if ids is None:
            if self.id_type == "str":
                raise InvalidArgumentError("ids are required for an index with id_type='str'")
            first = max(int(self._catalog.meta("next_id", "0") or 0), 0)
            return list(range(first, first + n))
        out = check_ids(ids, n, self.id_type)
        if len(set(out)) != n:
            dup = next(value for value, count in Counter(out).items() if count > 1)
            raise DuplicateIdError(f"id {dup!r} appears more than once in the batch")
        existing = self._catalog.existing_ids(out)
        if existing:
            raise DuplicateIdError(f"id {existing[0]!r} is already in the index ({len(existing)} duplicates)")
        return out

    def delete(self, ids: Sequence[int | str] | int | str) -> int:
        """Delete documents by id (all or nothing); returns how many were deleted.

        Raises :class:`UnknownIdError` if any id is not in the index (nothing is deleted then).
        """
        checked = as_id_list(ids, self.id_type)
        with self._write_lock:
            self._acquire_writer()
            rows = self._catalog.rows_of(checked)
            missing = [i for i in checked if i not in rows]
            if missing:
                raise UnknownIdError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown)")
            with self._catalog.transaction() as db:
                Catalog.delete_ids(db, checked)
            valid = self._view.valid.copy()
            valid[np.fromiter(rows.values(), np.int64, len(rows))] = False
            self._publish(valid.shape[0], valid, self._view.n_live - len(rows))
        return len(rows)

    def compact(self, *, chunk_rows: int = 65_536) -> int:
        """Rewrite the index as one segment without deleted rows; returns the number of rows reclaimed.

        Deletes only mask rows, and every ``add`` makes a segment; compaction gives the memory and the
        scan time back. It is crash-safe like ``add``: the new segment files are written and fsynced
        first, then one SQLite transaction swaps the segment list, renumbers the documents' rows and
        bumps the catalog generation; old files are removed afterwards. Searches that started on the
        old row numbers (here or in another process) see the new generation and search again.

        Parameters
        ----------
        chunk_rows : int
            Rows copied at a time from the memory-mapped tiers (bounds the memory used).
        """
        chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
        with self._write_lock:
            self._acquire_writer()
            view = self._view
            n_rows = view.codes.shape[0]
            if n_rows == view.n_live and len(self._segments) <= 1:
                return 0
            live = np.flatnonzero(view.valid).astype(np.int64)
            seg_id = max((s.seg_id for s in self._segments), default=0) + 1
            cand = self._manifest.candidate_tier.name

            def live_rows_of(name: str) -> Iterable[np.ndarray]:
                for i in range(0, live.size, chunk_rows):
                    rows = live[i : i + chunk_rows]
                    if name == cand:
                        yield view.codes[rows]
                    else:
                        yield gather_rows(list(view.rescore[name].arrays), view.starts, rows)

            chunks = {name: live_rows_of(name) for name in self._tiers}
            files = self._store.write(seg_id, int(live.size), chunks, self._tiers)
            segment = Segment(seg_id, 0, int(live.size), files)

            def commit(db: sqlite3.Connection) -> None:
                Catalog.replace_segments(db, segment)
                Catalog.renumber_rows(db, zip(range(live.size), live.tolist(), strict=True))
                Catalog.set_meta(db, "generation", str(self._generation + 1))

            self._commit(segment, commit)
            self._load_segments()
            self._stage.rebuilt(self.path, self._view.codes)
            self._remove_orphans()  # the old segments' files
        logger.info("compacted %s: %d rows -> %d", self.path, n_rows, live.size)
        return n_rows - int(live.size)

    # ---- reading ----------------------------------------------------------------------------------------
    def get(self, doc_id: int | str) -> dict[str, Any]:
        """The stored payload of one document: ``{"id", "text", "metadata"}``."""
        payload = self._catalog.get(check_id(doc_id, self.id_type, "id"))
        if payload is None:
            raise UnknownIdError(f"id {doc_id!r} is not in the index")
        return {"id": payload.id, "text": payload.text, "metadata": payload.metadata}

    def __contains__(self, doc_id: object) -> bool:
        try:
            return self._catalog.get(check_id(doc_id, self.id_type, "id")) is not None
        except InvalidArgumentError:
            return False

    def search(
        self,
        queries: np.ndarray | str | Sequence[str],
        k: int = 10,
        *,
        oversampling: float | None = None,
        stages: Sequence[str] | None = None,
        with_payload: bool = True,
    ) -> SearchResults:
        """Find the ``k`` best documents of each query.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, dim) or (dim,), float; or str / list of str
            Float query vectors (never quantized on themselves: the saved calibration is used), or
            texts, embedded with the index's model.
        k : int
            Results per query, 1 <= k <= number of documents.
        oversampling : float, optional
            The candidate stage keeps ``k * oversampling`` candidates for rescoring (default: the
            index's setting, :data:`DEFAULT_OVERSAMPLING` unless changed at create).
        stages : sequence of tier names, optional
            Rescoring stages to run, in order (default: every rescoring tier of the index, e.g.
            ``("int8",)``); ``()`` returns the candidate stage's ranking.
        with_payload : bool
            Fetch texts and metadata of the hits.

        Returns
        -------
        SearchResults
            ids and scores of shape (n_queries, k), payload, and per-stage timings in ms.
        """
        timings: dict[str, float] = {}
        k = check_positive_int(k, "k")
        self._check_k(k, self._view)
        oversampling = (
            self.default_oversampling
            if oversampling is None
            else check_number(oversampling, "oversampling", minimum=1)
        )
        stage_names = self._stage_names(stages)
        if isinstance(queries, str) or (
            isinstance(queries, Sequence) and queries and isinstance(queries[0], str)
        ):
            t0 = time.perf_counter()
            texts = [queries] if isinstance(queries, str) else list(queries)
            vectors = self.embedder.embed(texts)
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        else:
            vectors = queries
        vectors = as_float_matrix(vectors, "queries", dim=self.dim)
        for _attempt in range(3):
            view = self._view
            self._check_k(k, view)
            out = run_pipeline(view, vectors, k, oversampling=oversampling, stages=stage_names)
            t0 = time.perf_counter()
            generation, payload = self._catalog.payload(
                out.rows[out.rows >= 0].tolist(), with_text=with_payload
            )
            if generation == view.generation:
                break
            # rows were renumbered (a compaction) after this view was taken: search a fresh one
            self.refresh()
        else:
            raise IndexLockedError("the index was compacted three times during this search; try again")
        timings.update(out.timings)
        ids, found, texts_out, meta_out = self._lookup(out.rows, payload, with_payload)
        timings["payload" if with_payload else "ids"] = (time.perf_counter() - t0) * 1e3
        scores = np.where(found, out.scores, np.float32(np.nan))  # a row deleted since is padding, not a hit
        return SearchResults(ids, scores, texts_out, meta_out, timings, out.candidates)

    def _stage_names(self, stages: Sequence[str] | str | None) -> tuple[str, ...]:
        if stages is None:
            return self.rescore_tiers
        names = (stages,) if isinstance(stages, str) else tuple(stages)
        unknown = [s for s in names if s not in self.rescore_tiers]
        if unknown:
            raise InvalidArgumentError(
                f"unknown stage {unknown[0]!r}; this index has {list(self.rescore_tiers)}"
            )
        return names

    @staticmethod
    def _check_k(k: int, view: IndexView) -> None:
        if k > view.n_live:
            raise InvalidArgumentError(f"k={k} exceeds the number of documents in the index ({view.n_live})")

    def _lookup(
        self, rows: np.ndarray, payload: dict[int, Payload], with_payload: bool
    ) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        """Ids, found mask (nq, k) bool, texts and metadata of the given rows."""
        found = np.zeros(rows.shape, bool)
        ids = (
            np.full(rows.shape, -1, np.int64) if self.id_type == "int" else np.full(rows.shape, None, object)
        )
        texts: list[list[str | None]] = [[] for _ in range(rows.shape[0])]
        metas: list[list[dict[str, Any] | None]] = [[] for _ in range(rows.shape[0])]
        for q in range(rows.shape[0]):
            for j, row in enumerate(rows[q].tolist()):
                hit = payload.get(row)  # None: padding, or a row deleted while this search ran
                texts[q].append(None if hit is None else hit.text)
                metas[q].append(None if hit is None else hit.metadata)
                if hit is not None:
                    ids[q, j] = hit.id
                    found[q, j] = True
        return ids, found, (texts if with_payload else None), (metas if with_payload else None)

    @property
    def embedder(self) -> Any:
        """The :class:`~quantsearch.embed.Embedder` for text queries (created on first use)."""
        if self._embedder is None:
            if self.model is None:
                raise InvalidArgumentError("this index records no embedding model; search with vectors")
            from ..embed import Embedder

            model = None if self.model in ("default", None) else self.model
            # an index records its backend only when one was chosen; the default needs no argument
            self._embedder = (
                Embedder(model) if self.backend is None else Embedder(model, backend=self.backend)
            )
        return self._embedder

    @embedder.setter
    def embedder(self, value: Any) -> None:
        self._embedder = value

    # ---- introspection --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Counts, settings and the bytes each tier takes in RAM and on disk.

        :meth:`metadata` gives the counts and settings of an index directory without opening it.
        """
        view = self._view
        n_rows = view.codes.shape[0]
        tiers = []
        for spec in self._manifest.tiers:
            quantizer = self._tiers[spec.name]
            per_vector = quantizer.code_bytes if quantizer.is_fitted else None
            in_ram = spec.storage == "ram"
            tiers.append(
                {
                    "name": spec.name,
                    "role": spec.role,
                    "storage": "RAM" if in_ram else "disk (memory-mapped)",
                    "precision": quantizer.precision.value,
                    "code_dim": quantizer.code_dim if quantizer.is_fitted else None,
                    "bytes_per_vector": per_vector,
                    "ram_bytes": n_rows * (per_vector or 0) if in_ram else 0,
                    "disk_bytes": self._store.disk_bytes(self._segments, spec.name),
                    "quantizer": quantizer.to_config(),
                }
            )
        catalog_bytes = sum(p.stat().st_size for p in self.path.glob(layout.CATALOG + "*") if p.is_file())
        return {
            "path": str(self.path),
            "format_version": layout.FORMAT_VERSION,
            "count": view.n_live,
            "rows": n_rows,
            "deleted": n_rows - view.n_live,
            "segments": len(self._segments),
            "dim": self.dim,
            "id_type": self.id_type,
            "model": self.model,
            "backend": self.backend,
            "calibrated": self.is_calibrated,
            "default_oversampling": self.default_oversampling,
            "candidate_stage": view.stage.to_config(),
            "tiers": tiers,
            "catalog_bytes": catalog_bytes,
            "valid_mask_ram_bytes": int(view.valid.nbytes),
            "float32_bytes": n_rows * self.dim * 4,
        }

    def verify(self) -> None:
        """Check every file against the checksums recorded at write time (reads the whole index)."""
        self._store.verify(self._segments)
