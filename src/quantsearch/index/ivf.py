"""IVF candidate stage: coarse centroids over the codes, inverted lists of rows, ``nprobe``.

The structure is derived from the candidate codes alone (no float vectors are kept): the codes are
decoded (``Quantizer.decode``: +-1 vectors for sign bits), spherical k-means on a seeded sample gives
``nlist`` unit centroids, and every row is listed under its most similar centroid. A query is scored
against the centroids in float (asymmetric, no query binarization), the ``nprobe`` best lists are
gathered, and their rows' codes are scanned with the candidate quantizer's own kernel
(``scan_topk``: the Hamming popcount kernel for sign bits), deleted or filtered rows masked.

Filters narrow ``valid``. The stage then keeps the share of *valid* rows it scans, not the number of
lists: it probes lists in centroid order until it has seen ``nprobe / nlist`` of the valid rows (and
at least the candidates asked for), and it scans the valid rows exactly when there are no more of
them than an unfiltered probe would scan, or at most ``EXACT_SHARE`` (2%) of the rows. Recall
therefore does not collapse as a filter narrows.

Persistence: ``state/stage.ivf.npz`` (centroids, one list id per row, the rows and catalog generation
it covers), written atomically after each commit (``added``) and after compaction (``rebuilt``). The
file is derived data: ``load`` catches up with rows committed after it was written (a crash between
the catalog commit and the stage update) and rebuilds it when it is missing, damaged or belongs to an
earlier generation (a crash between a compaction's commit and its rebuild).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..exceptions import InvalidArgumentError, StorageError
from ..kernels import ivf_probe, ivf_scan
from ..quantization import BinaryQuantizer, Quantizer
from ..quantization.binary import pack_bits
from . import layout
from .ivf_train import FLAT_MAX, SHORTLIST, assign_rows, train_centroids
from .stages import CandidateStage, filter_widening, scan_rows

__all__ = ["IVFStage", "spherical_kmeans"]

logger = logging.getLogger(__name__)

#: file (relative to the index) of the persisted structure; under state/ so that orphan cleanup,
#: which keeps what :meth:`IVFStage.files` names, also removes stale temporary copies
IVF_FILE = f"{layout.STATE_DIR}/stage.ivf.npz"
#: a filter (or deletes) leaving at most this share of the rows is scanned exactly over the valid
#: rows (as the graph stage does): cheaper than walking hundreds of lists for a few rows each
EXACT_SHARE = 0.02
#: lists are chosen among the ``max(SHORTLIST_MIN, SHORTLIST_FACTOR x lists wanted)`` whose centroid
#: sign bits are nearest to the query's, then scored on int8 centroids: at 1M x 1024 (2,000 lists)
#: the 64 nearest hold 99% of the 4 best, and a single query reads 256 KB of bits instead of 2 MB
SHORTLIST_MIN = 64
#: under a filter admitting a share s of the rows, the lists walked must hold ``(1 / sqrt(s)) ** 1.5``
#: times the rows an unfiltered probe scans (valid ones): the filtered neighbours sit further from the
#: query, in more lists. 1M x 1024, nprobe 4, 10% filter, recall@10: power 1 0.950, 1.5 0.959, 2 0.963
FILTER_PROBE_POWER = 1.5
SHORTLIST_FACTOR = 16
#: rows decoded and scored against the centroids at a time (bounds the work arrays)
_ASSIGN_BLOCK = 16_384


@dataclass(frozen=True)
class _Lists:
    """An immutable snapshot of the inverted lists; ``added`` swaps in a new one."""

    centroids: np.ndarray  # (nlist, code_dim) float32, unit rows
    assign: np.ndarray  # (n_rows,) int32, list of each row
    order: np.ndarray  # (n_rows,) int32, rows sorted by list (ascending row within a list)
    offsets: np.ndarray  # (nlist + 1,) int64, list l is order[offsets[l]:offsets[l + 1]]
    n_trained: int  # rows there were when the centroids were trained
    # the centroids as int8 (per-centroid scale) for choosing lists: a quarter of the float32
    # bytes, which a single query's matrix-vector product reads from memory (2 MB at 1M rows)
    probe_centroids: np.ndarray  # (nlist, code_dim) int8
    probe_scale: np.ndarray  # (nlist,) float32
    probe_bits: np.ndarray  # (nlist, ceil(code_dim / 8)) uint8, the centroids' sign bits (shortlist)

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def of(cls, centroids: np.ndarray, assign: np.ndarray, n_trained: int) -> _Lists:
        order = np.argsort(assign, kind="stable").astype(np.int32)  # 4 bytes a row: n < 2**31
        counts = np.bincount(assign, minlength=centroids.shape[0])
        offsets = np.zeros(centroids.shape[0] + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        peak = np.abs(centroids).max(axis=1)
        scale = np.where(peak > 0, peak / 127, 1).astype(np.float32)
        probe = np.clip(np.rint(centroids / scale[:, None]), -127, 127).astype(np.int8)
        return cls(
            centroids, assign, order, offsets, n_trained, probe, scale, np.packbits(centroids > 0, axis=1)
        )


class IVFStage(CandidateStage):
    """Inverted-file candidate stage over the candidate tier's codes.

    Parameters
    ----------
    quantizer : Quantizer
        The fitted candidate quantizer (must implement ``decode``).
    nlist : int, optional
        Number of lists. Default: ``2 * sqrt(n)`` of the rows present when the lists are trained
        (and retrained, with the new ``n``, whenever the index has grown ``retrain_growth`` times).
    nprobe : int
        Lists scanned per query by default (``Index.search(nprobe=...)`` overrides it).
    min_rows : int
        Below this many rows the stage scans exactly (an IVF over a few thousand codes saves nothing).
    retrain_growth : float
        With the automatic ``nlist``: retrain once the index holds this many times the rows the
        centroids were trained on. Compaction always retrains.
    iterations : int
        k-means iterations.
    seed : int
        Seed of the k-means sample and initialisation (the structure is reproducible).
    """

    kind = "ivf"
    knob = "nprobe"
    calibration_file = f"{layout.STATE_DIR}/stage.ivf.calibration.json"

    def __init__(
        self,
        quantizer: Quantizer,
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        min_rows: int = 4096,
        retrain_growth: float = 4.0,
        iterations: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(quantizer)
        self.nlist = None if nlist is None else check_positive_int(nlist, "nlist")
        self.nprobe = check_positive_int(nprobe, "nprobe")
        self.min_rows = check_positive_int(min_rows, "min_rows")
        if not isinstance(retrain_growth, (int, float)) or not retrain_growth > 1:
            raise InvalidArgumentError(f"retrain_growth must be a number > 1, got {retrain_growth!r}")
        self.retrain_growth = float(retrain_growth)
        self.iterations = check_positive_int(iterations, "iterations")
        self.seed = int(seed)
        self._lists: _Lists | None = None
        self._generation = 0
        # (mask, valid rows, valid rows per list or None, valid row numbers or None) of the last mask
        self._valid_cache: tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None] | None = None

    @property
    def name(self) -> str:
        return f"ivf:{self.quantizer.scan_stage}"

    def params(self) -> dict[str, Any]:
        return {
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "min_rows": self.min_rows,
            "retrain_growth": self.retrain_growth,
            "iterations": self.iterations,
            "seed": self.seed,
        }

    @property
    def is_trained(self) -> bool:
        return self._lists is not None

    def ram_bytes(self) -> int:
        """The lists in RAM: centroids (float32, int8 with scales, sign bits), list of each row,
        rows in list order, list offsets."""
        lists = self._lists
        if lists is None:
            return 0
        arrays = (lists.centroids, lists.assign, lists.order, lists.offsets, lists.probe_centroids,
                  lists.probe_scale, lists.probe_bits)  # fmt: skip
        return int(sum(a.nbytes for a in arrays))

    # ---- search -----------------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        codes: np.ndarray,
        n: int,
        *,
        valid: np.ndarray,
        nprobe: int | None = None,
        target_recall: float | None = None,
        **options: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best candidates per query among the rows of the probed lists.

        ``nprobe`` overrides the stage's setting for this search; ``target_recall`` picks the
        cheapest calibrated ``nprobe`` that reached it (not both), every list when none did. Until
        the lists are trained (fewer than ``min_rows`` rows), the scan is exact.
        """
        self.check_options(options)
        chosen = self.resolve_setting(nprobe, target_recall, self.nprobe)
        lists = self._lists
        nprobe = lists.nlist if chosen is None and lists is not None else (chosen or self.nprobe)
        n_rows = codes.shape[0]
        if lists is None or lists.assign.shape[0] < n_rows:
            return self.quantizer.scan_topk(queries, codes, n, valid=valid)
        nprobe = min(nprobe, lists.nlist)
        # rows an unfiltered probe scans; a filter with fewer valid rows is scanned exactly
        expected = n_rows * nprobe / lists.nlist
        if n >= expected:  # more candidates wanted than a probe would scan: scan everything
            return self.quantizer.scan_topk(queries, codes, n, valid=valid)
        n_valid, counts = self._valid_counts(lists, valid, n_rows)
        filtered = n_valid < n_rows  # deletes or a filter
        if filtered and n_valid <= max(expected, 4 * n, EXACT_SHARE * n_rows):
            allowed = self._allowed_rows(valid)
            if self._hamming:
                probes = np.zeros((queries.shape[0], 1), np.int32)
                bounds = np.asarray([0, allowed.shape[0]], np.int64)
                return self._hamming_scan(queries, codes, allowed, bounds, probes, n, None)  # all valid
            return scan_rows(self.quantizer, queries, codes, allowed.astype(np.int64), n, valid)
        prepared = np.ascontiguousarray(self.quantizer.prepare_queries(queries), dtype=np.float32)
        want, needed = 0, nprobe
        if filtered:  # walk lists until the valid rows seen reach what an unfiltered probe scans, widened
            widen = filter_widening(n_valid / n_rows) ** FILTER_PROBE_POWER
            want = int(np.ceil(min(n_valid, max(n, expected * widen))))
            needed = max(nprobe, int(np.ceil(want * lists.nlist / max(n_valid, 1))))
        # the query's sign bits: the shortlist's, and with sign-bit codes the query's code itself
        # (BinaryQuantizer: prepare_queries is the identity and encode is pack_bits(x > 0))
        query_bits = pack_bits(prepared > 0)
        # the lists' arrays are built by _Lists.of with the documented dtypes: no per-call checks
        probes = ivf_probe(
            prepared, lists.probe_centroids, lists.probe_scale, nprobe, counts=counts, want=want,
            query_bits=query_bits, centroid_bits=lists.probe_bits,
            shortlist=max(SHORTLIST_MIN, SHORTLIST_FACTOR * needed), trusted=True,
        )  # fmt: skip
        if self._hamming:
            trusted = codes.flags.c_contiguous and valid.dtype == np.bool_
            distances, rows = ivf_scan(
                query_bits, codes, lists.order, lists.offsets, probes, n,
                valid=valid if filtered else None, n_rows=n_rows, trusted=trusted,
            )  # fmt: skip
            return np.where(rows >= 0, -distances.astype(np.float32), np.float32(np.nan)), rows
        scores = np.full((queries.shape[0], n), np.nan, np.float32)
        rows_out = np.full((queries.shape[0], n), -1, np.int64)
        for i in range(queries.shape[0]):  # other code families: their own scan over the gathered rows
            probe = probes[i][probes[i] >= 0]
            rows = np.sort(
                np.concatenate([lists.order[lists.offsets[c] : lists.offsets[c + 1]] for c in probe])
            ).astype(np.int64)
            if rows.size and rows[-1] >= n_rows:  # lists of a newer commit than this view
                rows = rows[: np.searchsorted(rows, n_rows)]
            s, r = scan_rows(self.quantizer, queries[i : i + 1], codes, rows, n, valid)
            scores[i], rows_out[i] = s[0], r[0]
        return scores, rows_out

    @property
    def _hamming(self) -> bool:
        """Sign-bit codes: the lists are scanned by the native Hamming list kernel in one call."""
        return isinstance(self.quantizer, BinaryQuantizer)

    def _hamming_scan(
        self,
        queries: np.ndarray,
        codes: np.ndarray,
        order: np.ndarray,
        offsets: np.ndarray,
        probes: np.ndarray,
        n: int,
        valid: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hamming top-``n`` of each query over the rows of its lists (score = -distance)."""
        distances, rows = ivf_scan(self.quantizer.encode(queries), codes, order, offsets, probes, n,
                                   valid=valid, n_rows=codes.shape[0])  # fmt: skip
        return np.where(rows >= 0, -distances.astype(np.float32), np.float32(np.nan)), rows

    def _valid_counts(self, lists: _Lists, valid: np.ndarray, n_rows: int) -> tuple[int, np.ndarray | None]:
        """Valid rows in all and per list (None when every row is valid); cached per mask: a view's
        mask is immutable, and a filter's is reused by the queries of one search."""
        cached = self._valid_cache
        if cached is not None and cached[0] is valid:
            return cached[1], cached[2]
        n_valid = int(np.count_nonzero(valid))
        counts = None
        if n_valid < n_rows:
            counts = np.bincount(lists.assign[:n_rows][valid], minlength=lists.nlist).astype(np.int64)
        self._valid_cache = (valid, n_valid, counts, None)
        return n_valid, counts

    def _allowed_rows(self, valid: np.ndarray) -> np.ndarray:
        """The valid rows (ascending int32), cached with the mask's counts (a concurrent search with
        another mask may have replaced the cache meanwhile: then they are computed again)."""
        cached = self._valid_cache
        if cached is not None and cached[0] is valid and cached[3] is not None:
            return cached[3]
        allowed = np.flatnonzero(valid).astype(np.int32)
        if cached is not None and cached[0] is valid:
            self._valid_cache = (*cached[:3], allowed)
        return allowed

    # ---- calibration ------------------------------------------------------------------------------------
    def calibration_grid(self) -> list[int]:
        lists = self._lists
        if lists is None:
            return []
        grid = [p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if p < lists.nlist]
        return [*grid, lists.nlist]

    def calibration_due(self) -> bool:
        lists = self._lists
        at = self._calibrated_at
        return lists is not None and (at is None or at != (self._generation, lists.n_trained))

    def set_calibration(self, root: Path, table: list[tuple[int, float]], rows: int, generation: int) -> None:
        # keyed by the rows the centroids were trained on: the table holds until the next retraining
        lists = self._lists
        super().set_calibration(root, table, rows if lists is None else lists.n_trained, generation)

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def files(self) -> set[str]:
        return {IVF_FILE, *super().files()}

    def load(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:
        """Open ``state/stage.ivf.npz``; catch up with rows committed after it, rebuild if stale."""
        self._generation = generation
        self._load_calibration(root)
        lists = self._read(root, codes.shape[0], generation)
        if lists is None:
            self._lists = None
            self._update(root, codes, 0, force_train=True)
            return
        self._lists = lists
        if lists.assign.shape[0] < codes.shape[0]:
            logger.info("IVF lists cover %d of %d rows: catching up", lists.assign.shape[0], codes.shape[0])
            self._update(root, codes, lists.assign.shape[0])

    def added(self, root: Path, codes: np.ndarray, start: int) -> None:
        self._update(root, codes, start)

    def rebuilt(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:
        lists = self._lists
        if generation == self._generation and lists is not None and lists.n_trained == codes.shape[0]:
            return  # load() already rebuilt the lists for this generation
        self._generation = generation
        self._lists = None
        self._update(root, codes, 0, force_train=True)

    def _update(self, root: Path, codes: np.ndarray, start: int, *, force_train: bool = False) -> None:
        """Assign rows ``start:`` (training or retraining first when due) and save the structure."""
        n_rows = codes.shape[0]
        lists = self._lists
        if lists is not None and lists.assign.shape[0] < start:
            start = lists.assign.shape[0]  # never leave a gap
        due = lists is None or (
            self.nlist is None and n_rows >= self.retrain_growth * max(lists.n_trained, 1)
        )
        if (force_train or due) and n_rows >= self.min_rows:
            centroids = self._train(codes)
            assign = self._assign(centroids, codes, 0)
            self._lists = _Lists.of(centroids, assign, n_rows)
        elif lists is not None and start < n_rows:
            new = self._assign(lists.centroids, codes, start)
            assign = np.concatenate([lists.assign[:start], new])
            self._lists = _Lists.of(lists.centroids, assign, lists.n_trained)
        elif lists is None:
            return  # too few rows to train: the search stays exact, nothing to save
        self._write(root)

    def _train(self, codes: np.ndarray) -> np.ndarray:
        n_rows = codes.shape[0]
        nlist = self.nlist if self.nlist is not None else max(1, int(round(2 * np.sqrt(n_rows))))
        nlist = min(nlist, n_rows)
        rng = np.random.default_rng(self.seed)
        sample_n = min(n_rows, max(64 * nlist, 20_000))
        sample = np.sort(rng.choice(n_rows, size=sample_n, replace=False)) if sample_n < n_rows else None
        logger.info("training %d IVF lists on %d of %d rows", nlist, sample_n, n_rows)
        iterations = self.iterations

        def kmeans(x: np.ndarray, k: int, r: np.random.Generator) -> np.ndarray:
            return spherical_kmeans(x, k, iterations=iterations, rng=r)

        # sign bits over many lists: the sample stays as codes, rows assigned by Hamming shortlists
        sample_codes = codes if sample is None else codes[sample]
        shortlist = SHORTLIST if self._hamming else 0
        return train_centroids(self.quantizer.decode, sample_codes, nlist, kmeans, rng,
                               iterations=iterations, shortlist=shortlist)  # fmt: skip

    def _assign(self, centroids: np.ndarray, codes: np.ndarray, start: int) -> np.ndarray:
        # sign bits over many lists: float scores against a Hamming shortlist of centroids (ivf_train)
        shortlist = SHORTLIST if self._hamming and centroids.shape[0] > FLAT_MAX else 0
        return assign_rows(self.quantizer.decode, codes[start:], centroids, shortlist=shortlist)

    def _write(self, root: Path) -> None:
        """Save the lists; a failure (disk full, read-only directory of a reader) is logged, not
        raised: the batch is already committed, and the next ``load`` catches up from the catalog."""
        lists = self._lists
        assert lists is not None
        meta = np.asarray([lists.assign.shape[0], self._generation, lists.n_trained], np.int64)
        arrays = {"centroids": lists.centroids, "assign": lists.assign, "meta": meta}
        try:
            layout.save_arrays(root / IVF_FILE, arrays)
        except StorageError as exc:
            logger.warning("IVF lists not saved (%s); the next open rebuilds them from the catalog", exc)

    def _read(self, root: Path, n_rows: int, generation: int) -> _Lists | None:
        """The saved lists if they are usable for this generation and at most ``n_rows`` rows."""
        path = root / IVF_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                centroids, assign, meta = data["centroids"], data["assign"], data["meta"]
            covered, saved_generation, n_trained = (int(v) for v in meta)
            ok = (
                saved_generation == generation
                and covered == assign.shape[0] <= n_rows
                and centroids.ndim == 2
                and centroids.shape[1] == self.quantizer.code_dim
                and assign.dtype == np.int32
                and (assign.size == 0 or 0 <= int(assign.min()) <= int(assign.max()) < centroids.shape[0])
            )
        except (OSError, ValueError, KeyError, EOFError) as exc:
            logger.warning("IVF lists %s cannot be read (%s): rebuilding", path, exc)
            return None
        if not ok:
            logger.info("IVF lists %s are stale (generation or rows changed): rebuilding", path)
            return None
        return _Lists.of(centroids.astype(np.float32), assign, n_trained)


def spherical_kmeans(x: np.ndarray, k: int, *, iterations: int = 10, rng: np.random.Generator) -> np.ndarray:
    """Unit centroids of ``x`` by cosine similarity (k-means on the sphere).

    Parameters
    ----------
    x : ndarray of shape (n, dim), float32
        Training vectors (need not be normalised).
    k : int
        Number of centroids, ``k <= n``.
    iterations : int
    rng : numpy Generator
        Picks the initial centroids (distinct rows) and reseeds empty clusters.

    Returns
    -------
    ndarray of shape (k, dim), float32 with unit rows.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, np.float32(1e-12))
    centroids = x[rng.choice(x.shape[0], size=k, replace=False)].copy()
    for _ in range(iterations):
        assign = np.empty(x.shape[0], np.int64)
        for a in range(0, x.shape[0], _ASSIGN_BLOCK):
            assign[a : a + _ASSIGN_BLOCK] = np.argmax(x[a : a + _ASSIGN_BLOCK] @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        _segment_sums(sums, assign, x)
        empty = np.flatnonzero(np.bincount(assign, minlength=k) == 0)
        if empty.size:
            sums[empty] = x[rng.choice(x.shape[0], size=empty.size, replace=False)]
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), np.float32(1e-12))
    return centroids.astype(np.float32)


def _segment_sums(out: np.ndarray, assign: np.ndarray, x: np.ndarray) -> None:
    """``out[c] = x[assign == c].sum(0)`` by one sort and ``reduceat`` (faster than ``np.add.at``)."""
    order = np.argsort(assign, kind="stable")
    sorted_assign = assign[order]
    starts = np.flatnonzero(np.r_[True, sorted_assign[1:] != sorted_assign[:-1]])
    out[sorted_assign[starts]] = np.add.reduceat(x[order], starts, axis=0)
