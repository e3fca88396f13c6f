"""The persistent tiered index: the lifecycle and search of one index directory.

:class:`Index` is a façade over parts with one job each: the typed :class:`~.manifest.Manifest`
(configuration), the :class:`~.catalog.Catalog` (ids, payload, committed segments; the commit point),
the :class:`~.storage.SegmentStore` (segment and state files, memory maps, orphans), the
:class:`~.stages.CandidateStage` (stage 1) and :func:`~.pipeline.run_pipeline` (stage 1 -> rescoring).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import MAX_NORM, as_float_matrix, check_norms, check_number, check_positive_int
from ..exceptions import (
    IndexLockedError,
    InvalidArgumentError,
    NotFittedError,
    ReadOnlyIndexError,
    UnknownIdError,
)
from ..fusion import Fusion
from ..quantization import Quantizer, quantizer_from_config
from ..results import SearchResults
from . import layout
from .calibration import calibrate_stage
from .catalog import Catalog, Segment
from .commits import commit_segment, insert_batch, live_chunks, swap_segments
from .documents import (
    IdType,
    as_id_list,
    auto_ids,
    check_column,
    check_id,
    check_new_ids,
    dump_metadata,
    join_payload,
    typed_ids,
)
from .filters import filter_rows, parse_filter
from .lexical import LEXICAL_KEY, LexicalTier, lexical_config
from .lifecycle import create_directory, is_writable
from .manifest import Manifest, plan_tiers
from .pipeline import IndexView
from .retrieval import FUSION_KEY, check_mode, run_mode, sources_of, split_queries
from .stages import check_stage_config
from .state import IndexState, retry_stale
from .storage import SegmentStore, WriterLock
from .streaming import calibration_sample, check_rows, release_pages
from .summary import describe, summarize

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
    def __init__(self, root: Path, manifest: Manifest, catalog: Catalog, *, readonly: bool = False) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self.path = root
        self.readonly = readonly
        self._manifest = manifest
        self._catalog = catalog
        self._store = SegmentStore(root)
        self._lock = WriterLock(root)
        self._write_lock = threading.RLock()
        self._embedder: Any = None
        self._tiers = self._store.load_quantizers(manifest)
        self._lexical = LexicalTier.from_manifest(manifest)
        if self._lexical is not None:
            self._lexical.check_tables(catalog)
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
        candidate_stage: str | dict[str, Any] | None = None,
        lexical: Any = None,
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
        lexical : bool, dict or TextAnalyzer, optional
            Keep a BM25 lexical tier over the texts (``search(mode="lexical" | "hybrid")``):
            ``True`` for the default analysis (English stopwords, Snowball English stemmer), or the
            analyzer's settings (``{"stopwords", "stemmer", "token_pattern"}``). Off by default.
        candidate_stage : str or dict, optional
            Stage 1: ``"exact"`` (default, a full scan of the codes) or an approximate structure
            over them, ``"ivf"`` or ``{"kind": "ivf", "params": {"nlist": ..., "nprobe": ...}}``
            (see :class:`~quantsearch.index.ivf.IVFStage`), ``"hnsw"`` or ``{"kind": "hnsw",
            "params": {"m": ..., "ef": ...}}`` (:class:`~quantsearch.index.graph.GraphStage`). Kept
            in the index directory and updated by every write.

        The directory is built beside ``path`` and renamed into place: if this raises (or the
        process dies), there is no index at ``path``.
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
        if model is not None and not isinstance(model, str):
            raise InvalidArgumentError(f"model must be a string, got {model!r}")
        tiers = plan_tiers(binary, rescore, truncate_dim)
        stage = check_stage_config(candidate_stage, quantizer_from_config(tiers[0].quantizer))
        lexical_settings = lexical_config(lexical)
        manifest = Manifest.new(
            dim, id_type, tiers,
            oversampling=oversampling, model=model, backend=backend, candidate_stage=stage,
        )  # fmt: skip
        if lexical_settings is not None:
            manifest = dataclasses.replace(manifest, extra={LEXICAL_KEY: lexical_settings})

        def populate(tmp: Path) -> None:
            catalog = Catalog(tmp / layout.CATALOG, create=True)
            if lexical_settings is not None:
                LexicalTier.create_tables(catalog)
            catalog.close()
            manifest.write(tmp)  # the manifest is written last: it marks a complete index
            with cls(tmp, Manifest.read(tmp), Catalog(tmp / layout.CATALOG)) as index:  # opens as written
                if calibration is not None:
                    index.calibrate(calibration)

        create_directory(root, populate)
        return cls.open(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool | None = None) -> Index:
        """Open an existing index; raises :class:`IndexNotFoundError` or :class:`CorruptIndexError`.

        ``readonly=True`` never writes to the directory (searches only; writes raise
        :class:`ReadOnlyIndexError`). The default opens read-only exactly when this process cannot
        write the directory's files (a read-only mount, or another user's files).
        """
        root = Path(path)
        manifest = Manifest.read(root)
        if readonly is None:
            readonly = not is_writable(root)
        catalog = Catalog(root / layout.CATALOG, readonly=bool(readonly))
        try:
            return cls(root, manifest, catalog, readonly=bool(readonly))
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
        calibration_size: int = 100_000,
        **create_kwargs: Any,
    ) -> Index:
        """Create an index and add ``vectors`` in batches of ``batch_size``.

        ``vectors`` may be larger than RAM: a ``.npy`` memory map (``np.load(path, mmap_mode="r")``)
        is read a batch at a time and each batch's pages are released once it is added, so the peak
        RSS is the index's own footprint plus about one batch. Each batch is validated as it is
        added; the quantizers are calibrated on a seeded sample of ``calibration_size`` rows (every
        row when there are fewer). If a batch is rejected, the new index is removed (index/streaming.py).
        """
        vectors = check_rows(vectors)
        calibration_size = check_positive_int(calibration_size, "calibration_size")
        if ids is not None and "id_type" not in create_kwargs:
            create_kwargs["id_type"] = "str" if len(ids) and isinstance(ids[0], str) else "int"
        existed = Path(path).exists()
        index = cls.create(
            path, vectors.shape[1], calibration=calibration_sample(vectors, calibration_size), **create_kwargs
        )
        release_pages(vectors, 0, vectors.shape[0])  # the sample's pages
        try:
            for start in range(0, vectors.shape[0], batch_size):
                end = start + batch_size
                index.add(
                    vectors[start:end],
                    ids=None if ids is None else ids[start:end],
                    texts=None if texts is None else texts[start:end],
                    metadata=None if metadata is None else metadata[start:end],
                )
                release_pages(vectors, start, end)
        except BaseException:
            index.close()
            shutil.rmtree(path, ignore_errors=True)  # build made it: nothing half-built is left
            if existed:
                Path(path).mkdir()
            raise
        return index

    @staticmethod
    def metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
        """What :meth:`info` says of the index at ``path``, read without loading any codes: the
        manifest, the calibration state, the catalog's counts and the segment files' sizes."""
        return describe(Path(path))

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
    def fusion(self) -> Fusion | None:
        """The fusion saved with the index (:meth:`set_fusion`), used by hybrid searches by default."""
        saved = self._manifest.extra.get(FUSION_KEY)
        return None if saved is None else Fusion.coerce(saved)

    @property
    def has_lexical(self) -> bool:
        """Whether the index keeps a lexical (BM25) tier."""
        return self._lexical is not None

    def set_fusion(self, fusion: Fusion | str | dict[str, Any]) -> Index:
        """Save the default fusion of hybrid searches in the manifest (e.g. a tuned weight)."""
        config = {FUSION_KEY: Fusion.coerce(fusion).to_config()}
        with self._write_lock:
            self._acquire_writer()
            dataclasses.replace(self._manifest, extra={**self._manifest.extra, **config}).write(self.path)
            self._manifest = Manifest.read(self.path)
        return self

    @property
    def rescore_tiers(self) -> tuple[str, ...]:
        return self._manifest.rescore_tiers

    @property
    def is_calibrated(self) -> bool:
        return all(q.is_fitted for q in self._tiers.values())

    def __len__(self) -> int:
        return self._state.view.n_live

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

    def _load_segments(self) -> None:
        self._state = IndexState.load(self._store, self._manifest, self._tiers, self._catalog)

    # ---- writing ------------------------------------------------------------------------------------
    def _acquire_writer(self) -> None:
        """Take the directory's writer lock (once per Index object) and clean up after crashes."""
        if self._lock.held:
            return
        if self.readonly:
            raise ReadOnlyIndexError(f"{self.path} is open read-only: it cannot be written")
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

    def _refresh(self) -> bool:
        """Reload what changed on disk; True when anything did."""
        version = self._catalog.version()  # first: never newer than what is compared below
        manifest = Manifest.read(self.path)
        if manifest != self._manifest:
            self._tiers = self._store.load_quantizers(manifest)
            self._manifest = manifest
            self._lexical = LexicalTier.from_manifest(manifest)
            self._load_segments()
            return True
        if (
            self._catalog.segments() != self._state.segments
            or self._catalog.count() != self._state.view.n_live
        ):
            self._load_segments()
            return True
        # the same segments and count: no add, delete or compaction committed elsewhere since the
        # state was read, so the ids it keeps are current as of `version`
        self._state.mark_current(version[0])
        return False

    def _caught_up(self) -> bool:
        with self._write_lock:
            return self._refresh()

    def _remove_orphans(self) -> None:
        referenced = {ref["path"] for seg in self._catalog.segments() for ref in seg.files.values()}
        self._store.remove_orphans(referenced | self._manifest.state_files() | self._state.stage.files())

    def calibrate(self, sample: np.ndarray) -> Index:
        """Fit every tier's quantizer on a sample of document vectors and save the calibration.

        Only allowed while the index has never held a document (codes already written depend on
        the old calibration).

        Parameters
        ----------
        sample : ndarray of shape (n, dim), float
        """
        sample = as_float_matrix(sample, "calibration sample", dim=self.dim, max_norm=MAX_NORM)
        with self._write_lock:
            self._acquire_writer()
            if self._state.segments:
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
        vectors = as_float_matrix(vectors, "vectors", dim=self.dim, max_norm=MAX_NORM)
        n = vectors.shape[0]
        texts_list = check_column(texts, n, "texts", (str,))
        meta_list = dump_metadata(metadata, n)
        with self._write_lock:
            self._acquire_writer()  # first, so that a calibration by another writer is seen
            if not self.is_calibrated:
                raise NotFittedError(
                    "the index is not calibrated: call calibrate(sample) or pass calibration= to create"
                )
            if ids is None and self.id_type == "int":
                id_list: list[int | str] = auto_ids(self._catalog.next_id(), n)
            else:
                id_list = check_new_ids(ids, n, self.id_type, self._catalog.existing_ids)
            codes = {name: q.encode(vectors) for name, q in self._tiers.items()}
            seg_id, start = self._state.next_segment()
            files = self._store.write(seg_id, n, {name: [a] for name, a in codes.items()}, self._tiers)
            segment = Segment(seg_id, start, n, files)

            body = insert_batch(
                self._catalog, segment, id_list, texts_list, meta_list, int_ids=self.id_type == "int"
            )
            if self._lexical is not None:
                body = self._lexical.extend_add(body, texts_list, start)
            commit_segment(self._catalog, self._store, segment, body)
            self._state.append(segment, codes, id_list)
            self._calibrate_stage()
        return id_list

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
                if self._lexical is not None:
                    self._lexical.delete_rows(db, rows.values())
            self._state.delete(np.fromiter(rows.values(), np.int64, len(rows)))
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
            view = self._state.view
            n_rows = view.codes.shape[0]
            if n_rows == view.n_live and len(self._state.segments) <= 1:
                return 0
            live = np.flatnonzero(view.valid).astype(np.int64)
            seg_id, _ = self._state.next_segment()
            chunks = live_chunks(view, live, self._tiers, self._manifest.candidate_tier.name, chunk_rows)
            files = self._store.write(seg_id, int(live.size), chunks, self._tiers)
            segment = Segment(seg_id, 0, int(live.size), files)
            body = swap_segments(segment, live, self._state.generation)
            if self._lexical is not None:
                body = self._lexical.extend_compact(body, live)
            commit_segment(self._catalog, self._store, segment, body)
            self._load_segments()
            self._state.stage.rebuilt(self.path, self._state.view.codes, generation=self._state.generation)
            self._calibrate_stage()
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
        filter: dict[str, Any] | None = None,  # noqa: A002 - the name users expect
        nprobe: int | None = None,
        ef: int | None = None,
        target_recall: float | None = None,
        mode: str = "dense",
        fusion: Fusion | str | dict[str, Any] | None = None,
        query_texts: Sequence[str] | None = None,
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
        filter : dict, optional
            Only documents whose metadata match, e.g. ``{"lang": "en", "year": {"gte": 2000}}``,
            ``{"tag": {"in": ["a", "b"]}}`` (see :mod:`~quantsearch.index.filters`), in every
            mode (BM25's statistics stay those of the whole index). Fewer than ``k`` matches pad
            the results (id ``-1``).
        nprobe : int, optional
            Lists an IVF candidate stage scans per query (default: the stage's setting).
        ef : int, optional
            Candidate list size of an HNSW candidate stage's search (default: the stage's setting).
        target_recall : float, optional
            Instead of ``nprobe`` / ``ef``: the cheapest setting whose recall@10 against the exact
            pipeline, measured when the stage's structure was built (:mod:`~.calibration`), reaches
            this; the exact scan when none did. The exact stage meets any target.
        mode : {"dense", "lexical", "hybrid", "svm"}
            ``dense`` (default): the vector pipeline. ``lexical``: BM25 over the lexical tier (needs
            query texts). ``hybrid``: both, fused. ``svm``: the dense candidates reranked by a
            per-query linear SVM over the last rescoring tier's vectors.
        fusion : "rrf", "convex", dict or Fusion, optional
            How ``hybrid`` fuses (default: the index's saved fusion, else RRF with equal weights).
        query_texts : sequence of str, optional
            The query texts when ``queries`` are vectors (for ``lexical`` and ``hybrid``).

        Returns
        -------
        SearchResults
            ids and scores of shape (n_queries, k), payload, and per-stage timings in ms.
        """
        timings: dict[str, float] = {}
        k = check_positive_int(k, "k")
        conditions = parse_filter(filter)
        if not conditions:
            self._check_k(k)  # before embedding the queries
        oversampling = (
            self.default_oversampling
            if oversampling is None
            else check_number(oversampling, "oversampling", minimum=1)
        )
        stage_names = self._stage_names(stages)
        vectors, texts = split_queries(queries, query_texts, self.dim)
        mode = check_mode(mode, self._lexical, texts is not None)
        # hybrid and svm use a fusion (svm its depth); one that is given is checked in every mode
        fused = None
        if fusion is not None or mode in ("hybrid", "svm"):
            fused = Fusion.coerce(fusion, self.fusion)
        if vectors is None and mode != "lexical":
            t0 = time.perf_counter()
            vectors = as_float_matrix(self.embedder.embed(texts), "queries", dim=self.dim)
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        if vectors is not None:  # float32 (n, dim), finite, from split_queries or the embedder
            check_norms(vectors, "queries", MAX_NORM)
        if target_recall is not None:
            self._ensure_calibrated()
        row_ids: np.ndarray | None = None
        for _attempt in range(3):
            view = self._state.view if conditions else self._check_k(k)
            filtered = filter_rows(self._catalog, conditions, view) if conditions else None
            if conditions and filtered is None:
                self.refresh()  # the filter's rows are of a newer generation (a compaction)
                continue
            mask, allowed = (None, None) if filtered is None else filtered
            out = run_mode(
                mode, view, vectors, texts, k, catalog=self._catalog, lexical=self._lexical,
                fusion=fused, oversampling=oversampling, stages=stage_names, valid=mask, allowed=allowed,
                stage_options={"nprobe": nprobe, "ef": ef, "target_recall": target_recall},
            )  # fmt: skip
            t0 = time.perf_counter()
            same_rows = allowed is None or out.generation == view.generation  # the filter's rows
            if out.ids is not None and not with_payload and same_rows:
                payload = None  # the lexical tier read the ids with its rows, in one snapshot
                break
            if not with_payload and mode in ("dense", "svm") and same_rows:
                row_ids = self._view_ids(view, out.rows)
                if row_ids is not None:
                    payload = None  # the view's rows, mapped by the view's ids
                    break
            generation, payload = self._catalog.payload(
                out.rows[out.rows >= 0].tolist(), with_text=with_payload
            )
            if generation == view.generation and out.generation in (None, generation):
                break
            # rows were renumbered (a compaction) after this view was taken: search a fresh one
            self.refresh()
        else:
            raise IndexLockedError("the index was compacted three times during this search; try again")
        timings.update(out.timings)
        if payload is None and row_ids is not None:
            found = out.rows >= 0
            ids, texts_out, meta_out = row_ids, None, None
        elif payload is None:
            assert out.ids is not None
            found = out.rows >= 0
            ids, texts_out, meta_out = typed_ids(out.ids, found, self.id_type), None, None
        else:
            ids, found, texts_out, meta_out = join_payload(out.rows, payload, self.id_type, with_payload)
        timings["payload" if with_payload else "ids"] = (time.perf_counter() - t0) * 1e3
        scores = np.where(found, out.scores, np.float32(np.nan))  # a row deleted since is padding, not a hit
        sources = sources_of(mode, found, out.found)
        return SearchResults(ids, scores, texts_out, meta_out, timings, out.candidates, sources)

    def _view_ids(self, view: IndexView, rows: np.ndarray) -> np.ndarray | None:
        """The ids (int64, -1 at padding) of a search's ``rows`` of ``view``, from the ids the view
        keeps in RAM; None when it keeps none (string ids) or another connection committed to the
        catalog since they were read (a delete there must not be returned: the catalog answers)."""
        ids = view.ids
        if ids is None or self._catalog.version()[0] != view.data_version:
            return None
        found = rows >= 0
        return np.where(found, ids[np.where(found, rows, 0)].astype(np.int64), -1)

    def _calibrate_stage(self) -> None:
        """Measure the candidate stage's recall table when its structure was (re)built (writer side)."""
        if self._state.stage.calibration_due():
            calibrate_stage(self._state.view, self.path, oversampling=self.default_oversampling)

    def _ensure_calibrated(self) -> None:
        """A target-recall search on a stage whose table is missing (a crash before it was saved, an
        index written before calibration existed): measure it now."""
        stage = self._state.stage
        if stage.calibration is None and stage.calibration_grid():
            with self._write_lock:
                if stage.calibration is None:
                    calibrate_stage(self._state.view, self.path, oversampling=self.default_oversampling)

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

    def _check_k(self, k: int) -> IndexView:
        """The view to search, checked to hold at least ``k`` documents; a view with fewer catches up
        first (another process may have added documents since it was taken)."""
        view = self._state.view
        if k > view.n_live:
            self.refresh()
            view = self._state.view
            if k > view.n_live:
                raise InvalidArgumentError(
                    f"k={k} exceeds the number of documents in the index ({view.n_live})"
                )
        return view

    @property
    def embedder(self) -> Any:
        """The :class:`~quantsearch.embed.Embedder` for text queries (created on first use)."""
        if self._embedder is None:
            if self.model is None:
                raise InvalidArgumentError("this index records no embedding model; search with vectors")
            from ..embed import Embedder

            # an index records its backend only when one was chosen; the default needs no argument
            options: dict[str, Any] = {} if self.backend is None else {"backend": self.backend}
            self._embedder = Embedder(self.model, **options)
        return self._embedder

    @embedder.setter
    def embedder(self, value: Any) -> None:
        self._embedder = value

    # ---- introspection --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Counts, settings and the bytes each tier takes in RAM and on disk.

        :meth:`metadata` answers the same for a directory without opening the index. A view
        that another process's compaction made stale is refreshed first.
        """
        return retry_stale(
            self._caught_up,
            lambda: summarize(
                self._store,
                self._manifest,
                self._tiers,
                self._state.segments,
                n_live=self._state.view.n_live,
                stage_ram_bytes=self._state.view.stage.ram_bytes(),
            ),
        )

    def verify(self) -> None:
        """Check every file against the checksums recorded at write time (reads the whole index)."""
        retry_stale(self._caught_up, lambda: self._store.verify(self._state.segments))
        if self._lexical is not None:
            self._lexical.verify(self._catalog)
