"""Thin wrappers over the compiled extension (``_native``): allocate outputs, pass arrays through.

Arguments are assumed validated (see :mod:`quantsearch.kernels.dispatch`); the extension checks
shapes and dtypes again so that a bad call raises instead of reading out of bounds. Every call
releases the GIL while it computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Literal

import numpy as np

from ..exceptions import MissingDependencyError
from . import numpy_backend
from .backend import ISA, native_module

Strategy = Literal["auto", "direct", "blocked"]
_STRATEGY = {"auto": 0, "direct": 1, "blocked": 2}
# code kinds of the extension's rescoring kernel
_KIND = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1, np.dtype(np.float16): 3, np.dtype(np.float32): 4}
_KIND_INT4 = 2


def _module() -> ModuleType:
    module = native_module()
    if module is None:
        raise MissingDependencyError(
            "the native kernels are not built; reinstall quantsearch with a C compiler available"
        )
    return module


def hamming_topk(
    queries: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
    isa: str = "avx512",
    threads: int = 1,
    strategy: Strategy = "auto",
    block_bytes: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k on the native kernels; same contract as the numpy reference.

    Parameters
    ----------
    queries : ndarray of shape (nq, nb), uint8, C-contiguous
    codes : ndarray of shape (n, nb), uint8, C-contiguous
    k : int
    valid : ndarray of shape (n,), bool, optional
    isa : {"avx512", "avx2", "portable"}
    threads : int
        Threads to split the code rows over (fewer are used for small inputs).
    strategy : {"auto", "direct", "blocked"}
        ``"direct"`` scans rows as stored (best for one or a few queries); ``"blocked"`` transposes
        each cache-sized block so that a group of queries shares every load (best for batches);
        ``"auto"`` picks by the number of queries. Exposed so that tests cover both.
    block_bytes : int
        Cache block size in bytes (0: the kernel's default).

    Returns
    -------
    distances : ndarray of shape (nq, k), int32, ascending; ``PAD_DISTANCE`` in padding slots
    rows : ndarray of shape (nq, k), int64; -1 in padding slots
    """
    nq = queries.shape[0]
    distances = np.empty((nq, k), np.int32)
    rows = np.empty((nq, k), np.int64)
    _module().hamming_topk(
        queries, codes, valid, k, ISA[isa], _STRATEGY[strategy], threads, block_bytes, distances, rows
    )
    return distances, rows


def dot_rows(
    arrays: Sequence[np.ndarray],
    starts: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    *,
    offset: int = 0,
    nibbles: bool = False,
    isa: str = "avx512",
    threads: int = 1,
) -> np.ndarray:
    """Fused gather + dot on the native kernels; see :func:`quantsearch.kernels.dot_rows`."""
    kind = _KIND_INT4 if nibbles else _KIND[arrays[0].dtype] if arrays else 0
    out = np.empty(rows.shape, np.float32)
    _module().rescore(list(arrays), starts, rows, weights, kind, offset, ISA[isa], threads, out)
    return out


def planes_topk(
    weights: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    planes: int,
    dim: int,
    plane_coef: np.ndarray,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    valid: np.ndarray | None,
    query_bits: int | None,
    isa: str = "avx512",
    threads: int = 1,
    strategy: Strategy = "auto",
    block_bytes: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Float query x bit-plane codes top-k on the native kernels; same contract as the numpy
    reference (:func:`quantsearch.kernels.numpy_backend.planes_topk`).

    The queries are quantized here, in numpy (:func:`~.numpy_backend.quantize_weights`), so every
    backend scores with the same integer levels. ``strategy``: ``"blocked"`` (the default on
    AVX-512 / AVX2: SIMD popcounts over a transposed block) or ``"direct"`` (scalar popcounts over
    rows as stored; the only kernel of the portable path and of the exact mode). Weights of shape
    (nq, planes + 1, dim) select the AND-term scan (transposed kernels only; see
    :func:`quantsearch.kernels.planes_topk`).
    """
    nq = weights.shape[0]
    and_term = weights.ndim == 3
    if and_term:
        # the planes and their AND side by side, one weight vector (see numpy_backend.and_term_layout)
        span = 64 * ((dim + 63) // 64)
        wide = np.zeros((nq, planes + 1, span), np.float32)
        wide[:, :, :dim] = weights
        weights = wide.reshape(nq, -1)
        plane_coef = np.ones(1)
    if query_bits is None:
        lo = delta = np.zeros(nq)
        uplanes = None
    else:
        lo, delta, levels = numpy_backend.quantize_weights(weights, query_bits)
        uplanes = numpy_backend.level_planes(levels, query_bits, weights.shape[1])
    scores = np.empty((nq, k), np.float32)
    rows = np.empty((nq, k), np.int64)
    _module().planes_topk(
        codes,
        valid,
        k,
        planes,
        dim,
        weights,
        query_bits or 0,
        uplanes,
        lo,
        delta,
        plane_coef,
        row_scale,
        row_bias,
        query_offset,
        ISA[isa],
        _STRATEGY[strategy],
        threads,
        block_bytes,
        and_term,
        scores,
        rows,
    )
    return scores, rows


_NIBBLE_LAYOUT = {"planes": 0, "base3": 1, "bits": 2}


def nibble_topk(
    luts: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    lo: np.ndarray,
    delta: np.ndarray,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    valid: np.ndarray | None,
    layout: str = "planes",
    scale_offset: int | None = None,
    isa: str = "avx2",
    threads: int = 1,
    block_bytes: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """2-bit plane / base-3 codes x nibble tables top-k on the native kernels; see
    :func:`quantsearch.kernels.nibble_topk`."""
    nq = luts.shape[0]
    scores = np.empty((nq, k), np.float32)
    rows = np.empty((nq, k), np.int64)
    _module().nibble_topk(
        codes, valid, k, _NIBBLE_LAYOUT[layout], luts, lo, delta, row_scale,
        -1 if scale_offset is None else scale_offset, row_bias, query_offset, ISA[isa], threads, block_bytes,
        scores, rows,
    )  # fmt: skip
    return scores, rows


def nibble_scan(
    queries: np.ndarray,
    levels: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    layout: str,
    scale_offset: int | None,
    score_bias: np.ndarray | None,
    valid: np.ndarray | None,
    isa: str = "avx2",
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Nibble tables built from the queries and the scan, in one native call; see
    :func:`quantsearch.kernels.nibble_scan`."""
    nq = queries.shape[0]
    scores = np.empty((nq, k), np.float32)
    rows = np.empty((nq, k), np.int64)
    _module().nibble_scan(
        codes, valid, k, _NIBBLE_LAYOUT[layout], queries, levels, None,
        -1 if scale_offset is None else scale_offset, None, None, score_bias, ISA[isa], threads, 0,
        scores, rows,
    )  # fmt: skip
    return scores, rows


def table_topk(
    tables: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    valid: np.ndarray | None,
    threads: int = 1,
    block_bytes: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Byte lookup table top-k on the native kernels; see :func:`quantsearch.kernels.table_topk`."""
    nq = tables.shape[0]
    scores = np.empty((nq, k), np.float32)
    rows = np.empty((nq, k), np.int64)
    _module().table_topk(
        codes, valid, k, tables, row_scale, row_bias, query_offset, threads, block_bytes, scores, rows
    )
    return scores, rows


_KIND_BLOCKS = {"q8_0": 5, "q4_0": 6, "q4_1": 7}


def dot_rows_blocks(
    arrays: Sequence[np.ndarray],
    starts: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    fmt: str,
    *,
    isa: str = "avx512",
    threads: int = 1,
) -> np.ndarray:
    """Fused gather + dot over ggml block rows; see :func:`quantsearch.kernels.dot_rows_blocks`.
    ``weights`` (nq, 32 * blocks) float32, zero padded."""
    out = np.empty(rows.shape, np.float32)
    _module().rescore(list(arrays), starts, rows, weights, _KIND_BLOCKS[fmt], 0, ISA[isa], threads, out)
    return out


def blocks_topk(
    weights: np.ndarray,
    codes: np.ndarray,
    k: int,
    fmt: str,
    *,
    valid: np.ndarray | None,
    isa: str = "avx2",
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ggml block rows on the scan driver; see :func:`quantsearch.kernels.blocks_topk`.
    ``weights`` (nq, 32 * blocks) float32, zero padded."""
    nq = weights.shape[0]
    scores = np.empty((nq, k), np.float32)
    rows = np.empty((nq, k), np.int64)
    _module().blocks_topk(codes, valid, k, weights, _KIND_BLOCKS[fmt], ISA[isa], threads, scores, rows)
    return scores, rows


def ivf_probe(
    queries: np.ndarray,
    centroids: np.ndarray,
    scale: np.ndarray,
    nprobe: int,
    *,
    counts: np.ndarray | None,
    want: int,
    cap: int,
    query_bits: np.ndarray | None = None,
    centroid_bits: np.ndarray | None = None,
    shortlist: int = 0,
    isa: str = "avx512",
    threads: int = 1,
) -> np.ndarray:
    """Lists of each query on the native kernels; see :func:`quantsearch.kernels.ivf_probe`."""
    out = np.empty((queries.shape[0], cap), np.int32)
    _module().ivf_probe(
        queries, query_bits, centroids, scale, centroid_bits, counts, nprobe, want, shortlist, ISA[isa],
        threads, out,
    )  # fmt: skip
    return out


def ivf_scan(
    queries: np.ndarray,
    codes: np.ndarray,
    n_rows: int,
    order: np.ndarray,
    offsets: np.ndarray,
    probes: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None,
    isa: str = "avx512",
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Hamming top-k over the probed lists on the native kernels; see :func:`quantsearch.kernels.ivf_scan`."""
    nq = queries.shape[0]
    distances = np.empty((nq, k), np.int32)
    rows = np.empty((nq, k), np.int64)
    _module().ivf_scan(
        queries, codes, n_rows, order, offsets, probes, valid, k, ISA[isa], threads, distances, rows
    )
    return distances, rows
