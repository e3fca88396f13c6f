"""Graph candidate stage: an HNSW proximity graph over the 1-bit codes (faiss ``IndexBinaryHNSW``), ``ef``.

The graph holds the sign-bit codes of every row (key = row) and is searched by Hamming distance, the
same score as the exact scan (``-distance``), so its candidates flow into the unchanged rescoring.
Why faiss and not usearch or our own graph: see docs/architecture.md ("Graph candidate stage").

Deletes and filters: the graph keeps deleted rows as nodes (they still route the search) and the
validity mask becomes a faiss ``IDSelectorBitmap``, checked when results are collected, so a filter
never returns a row outside it. A graph search under a filter has to walk past the rows it rejects,
so ``ef`` is widened by ``1 / sqrt(selectivity)`` (capped); when the filter keeps at most ``exact_fraction``
of the rows, the valid rows are scanned exactly instead (recall 1 for the stage, cost proportional
to the valid rows). Compaction rebuilds the graph over the surviving rows.

Persistence: ``state/stage.hnsw.bin``: a header (magic, rows covered, catalog generation, sha256 of
the body) and the faiss serialisation, written atomically (temp + fsync + rename). Saving the whole
graph after every small add would rewrite hundreds of MB, so ``added`` saves only once the rows added
since the last save reach ``save_fraction`` of the graph (and always after a build); ``load`` inserts
the rows committed after the saved copy (a crash between the catalog commit and the save, or the
unsaved tail) and rebuilds when the file is missing, damaged or of an earlier generation (a crash
between a compaction's commit and its rebuild). Catching up a tail of at most ``save_fraction`` of the
rows is an insert, not a rebuild.

Concurrency: faiss searches are read-only and may run in parallel, but an insert changes the graph in
place, so searches share and inserts take a readers-writer lock. A view older than the graph sees
rows past its own end in the results; they are dropped (the selector covers only the view's rows).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..exceptions import InvalidArgumentError, StorageError
from ..kernels import get_num_threads
from ..quantization import Quantizer
from ..quantization.binary import BinaryQuantizer
from . import layout
from .stages import CandidateStage, scan_rows

__all__ = ["GraphStage"]

logger = logging.getLogger(__name__)

GRAPH_FILE = f"{layout.STATE_DIR}/stage.hnsw.bin"
_MAGIC = b"QSHNSW01"
_HEADER = struct.Struct("<8sqq32sq")  # magic, rows covered, generation, sha256 of body, body length
#: largest ef a filtered search widens to (beyond it the exact scan of the valid rows is cheaper)
_MAX_EF = 4096
#: calibration grid of ef values
_EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class _RWLock:
    """Many readers or one writer (searches share the graph; inserts change it in place)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    def read(self) -> _Held:
        return _Held(self, write=False)

    def write(self) -> _Held:
        return _Held(self, write=True)


class _Held:
    def __init__(self, lock: _RWLock, *, write: bool) -> None:
        self._lock, self._write = lock, write

    def __enter__(self) -> None:
        cond = self._lock._cond
        with cond:
            if self._write:
                cond.wait_for(lambda: not self._lock._writer and self._lock._readers == 0)
                self._lock._writer = True
            else:
                cond.wait_for(lambda: not self._lock._writer)
                self._lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        cond = self._lock._cond
        with cond:
            if self._write:
                self._lock._writer = False
            else:
                self._lock._readers -= 1
            cond.notify_all()


class GraphStage(CandidateStage):
    """HNSW candidate stage over sign-bit codes (faiss ``IndexBinaryHNSW``).

    Parameters
    ----------
    quantizer : BinaryQuantizer
        The fitted sign-bit candidate quantizer (the graph is searched by Hamming distance).
    m : int
        Graph degree (HNSW's ``M``; the base layer keeps ``2 m`` neighbours).
    ef_construction : int
        Candidate list size while inserting (faiss's ``efConstruction``).
    ef : int
        Candidate list size of a search by default (``Index.search(ef=...)`` overrides it; a search
        always uses at least the number of candidates it wants).
    min_rows : int
        Below this many rows the stage scans exactly and keeps no graph (measured crossover: see
        docs/benchmarks.md).
    exact_fraction : float
        A filter (or deletes) leaving at most this share of the rows is answered by an exact scan of
        the valid rows.
    save_fraction : float
        ``added`` rewrites the saved graph once the unsaved rows reach this share of it.
    """

    kind = "hnsw"
    knob = "ef"
    calibration_file = f"{layout.STATE_DIR}/stage.hnsw.calibration.json"

    def __init__(
        self,
        quantizer: Quantizer,
        *,
        m: int = 16,
        ef_construction: int = 40,
        ef: int = 64,
        min_rows: int = 200_000,
        exact_fraction: float = 0.02,
        save_fraction: float = 0.1,
    ) -> None:
        super().__init__(quantizer)
        if not isinstance(quantizer, BinaryQuantizer):
            raise InvalidArgumentError(
                "the hnsw candidate stage needs sign-bit (binary) candidate codes, "
                f"not {type(quantizer).__name__}"
            )
        self.m = check_positive_int(m, "m")
        self.ef_construction = check_positive_int(ef_construction, "ef_construction")
        self.ef = check_positive_int(ef, "ef")
        self.min_rows = check_positive_int(min_rows, "min_rows")
        for name, value in (("exact_fraction", exact_fraction), ("save_fraction", save_fraction)):
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
        self.exact_fraction = float(exact_fraction)
        self.save_fraction = float(save_fraction)
        self._graph: Any = None  # faiss.IndexBinaryHNSW
        self._generation = 0
        self._saved_rows = 0
        self._lock = _RWLock()
        self._selector_cache: tuple[np.ndarray, int, Any, np.ndarray] | None = None

    @property
    def name(self) -> str:
        return f"hnsw:{self.quantizer.scan_stage}"

    def params(self) -> dict[str, Any]:
        return {
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "min_rows": self.min_rows,
            "exact_fraction": self.exact_fraction,
            "save_fraction": self.save_fraction,
        }

    @property
    def n_graph(self) -> int:
        """Rows the graph holds (0 when there is none)."""
        return 0 if self._graph is None else int(self._graph.ntotal)

    def ram_bytes(self) -> int:
        """faiss's graph in RAM: its own copy of the codes, the neighbour lists (int32), their
        offsets (one per row) and levels."""
        graph = self._graph
        if graph is None:
            return 0
        hnsw = graph.hnsw
        links = 4 * int(hnsw.neighbors.size()) + 8 * int(hnsw.offsets.size()) + 4 * int(hnsw.levels.size())
        return int(graph.ntotal) * int(graph.code_size) + links

    # ---- search -----------------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        codes: np.ndarray,
        n: int,
        *,
        valid: np.ndarray,
        ef: int | None = None,
        target_recall: float | None = None,
        **options: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best candidates per query found by the graph (exact below ``min_rows`` rows or under
        a very selective filter). ``ef`` overrides the stage's setting; ``target_recall`` picks the
        cheapest calibrated ``ef`` that reached it (not both), or the exact scan when none did."""
        self.check_options(options)
        chosen = self.resolve_setting(ef, target_recall, self.ef)
        n_rows = codes.shape[0]
        if chosen is None or self._graph is None or self.n_graph < n_rows:
            return self.quantizer.scan_topk(queries, codes, n, valid=valid)
        n_valid = int(np.count_nonzero(valid))
        if n >= n_valid or n_valid <= self.exact_fraction * n_rows:
            return scan_rows(self.quantizer, queries, codes, np.flatnonzero(valid), n, valid)
        import faiss

        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        selectivity = n_valid / n_rows
        params.efSearch = int(min(max(chosen, n) / np.sqrt(selectivity), max(_MAX_EF, n)))
        selector = None
        if n_valid < n_rows or self.n_graph > n_rows:
            selector = self._selector(valid, n_rows)
            params.sel = selector
        qcodes = np.ascontiguousarray(self.quantizer.encode(queries))
        with self._lock.read():
            # one thread for one query: faiss's OpenMP team would only add a fork-join (and a
            # visited table per thread) to a walk that is sequential anyway
            faiss.omp_set_num_threads(min(get_num_threads(), qcodes.shape[0]))
            distances, rows = self._graph.search(qcodes, n, params=params)
        del selector  # the parameters referenced it until here
        rows = rows.astype(np.int64)
        scores = np.where(rows >= 0, -distances.astype(np.float32), np.float32(np.nan))
        return scores, rows

    def _selector(self, valid: np.ndarray, n_rows: int) -> Any:
        """An ``IDSelectorBitmap`` of the valid rows (cached per mask: a view's mask is immutable)."""
        import faiss

        cached = self._selector_cache
        if cached is not None and cached[0] is valid and cached[1] == n_rows:
            return cached[2]
        bits = np.packbits(valid[:n_rows], bitorder="little")
        selector = faiss.IDSelectorBitmap(n_rows, faiss.swig_ptr(bits))
        self._selector_cache = (valid, n_rows, selector, bits)  # bits must outlive the selector
        return selector

    # ---- calibration ------------------------------------------------------------------------------------
    def calibration_grid(self) -> list[int]:
        return list(_EF_GRID) if self._graph is not None else []

    def calibration_due(self) -> bool:
        if self._graph is None:
            return False
        calibrated = self._calibrated_at
        return calibrated is None or calibrated[0] != self._generation or self.n_graph >= 2 * calibrated[1]

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def files(self) -> set[str]:
        return {GRAPH_FILE, *super().files()}

    def load(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:
        """Open the saved graph; insert the rows committed after it; rebuild when it is stale."""
        self._generation = generation
        self._load_calibration(root)
        graph = self._read(root, codes.shape, generation)
        if graph is None:
            self._graph = None
            self._update(root, codes, force_build=True)
            return
        self._graph = graph
        self._saved_rows = int(graph.ntotal)
        if graph.ntotal < codes.shape[0]:
            logger.info("HNSW graph covers %d of %d rows: catching up", graph.ntotal, codes.shape[0])
            self._update(root, codes)

    def added(self, root: Path, codes: np.ndarray, start: int) -> None:
        self._update(root, codes)

    def rebuilt(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:
        if generation == self._generation and self._graph is not None and self._saved_rows == codes.shape[0]:
            return  # load() already rebuilt the graph for this generation
        self._generation = generation
        self._graph = None
        self._update(root, codes, force_build=True)

    def _update(self, root: Path, codes: np.ndarray, *, force_build: bool = False) -> None:
        """Insert the rows the graph lacks (building it once there are ``min_rows``) and save when due."""
        n_rows = codes.shape[0]
        if self._graph is None:
            if n_rows < self.min_rows:
                return  # the search stays exact; nothing to save
            self._graph = self._new_graph(codes.shape[1])
            self._saved_rows = 0
            force_build = True
        covered = self.n_graph
        if covered < n_rows:
            with self._lock.write():
                import faiss

                faiss.omp_set_num_threads(get_num_threads())
                self._graph.add(np.ascontiguousarray(codes[covered:n_rows]))
        unsaved = self.n_graph - self._saved_rows
        if force_build or unsaved > self.save_fraction * max(self._saved_rows, 1):
            self._write(root)

    def _new_graph(self, width: int) -> Any:
        import faiss

        graph = faiss.IndexBinaryHNSW(8 * width, self.m)
        graph.hnsw.efConstruction = self.ef_construction
        return graph

    def _write(self, root: Path) -> None:
        """Save the graph; a failure (disk full, a reader's read-only directory) is logged, not raised:
        the batch is already committed, and the next ``load`` catches up from the catalog."""
        import faiss

        with self._lock.read():
            body = faiss.serialize_index_binary(self._graph)
            covered = int(self._graph.ntotal)
        digest = hashlib.sha256(body.data).digest()
        header = _HEADER.pack(_MAGIC, covered, self._generation, digest, body.nbytes)

        def write(f: Any) -> None:
            f.write(header)
            f.write(body.data)

        try:
            layout.atomic_write(root / GRAPH_FILE, write)
            self._saved_rows = covered
        except StorageError as exc:
            logger.warning("HNSW graph not saved (%s); the next open catches up from the catalog", exc)

    def _read(self, root: Path, shape: tuple[int, ...], generation: int) -> Any:
        """The saved graph if it is intact, of this generation and covers at most ``n_rows`` rows."""
        import faiss

        path = root / GRAPH_FILE
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
            magic, covered, saved_generation, digest, length = _HEADER.unpack_from(data)
            body = np.frombuffer(data, np.uint8, offset=_HEADER.size)
            if magic != _MAGIC or length != body.size or hashlib.sha256(body.data).digest() != digest:
                raise ValueError("bad header or checksum")
            if saved_generation != generation or covered > shape[0]:
                logger.info("HNSW graph %s is stale (generation or rows changed): rebuilding", path)
                return None
            graph = faiss.deserialize_index_binary(body)
            if graph.ntotal != covered or graph.code_size != shape[1]:
                raise ValueError("graph does not match its header or the codes")
        except (OSError, ValueError, struct.error, RuntimeError) as exc:
            logger.warning("HNSW graph %s cannot be read (%s): rebuilding", path, exc)
            return None
        return graph
