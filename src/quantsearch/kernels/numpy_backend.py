"""Reference kernels in plain numpy: blocked Hamming top-k, row gathering, gather + dot.

Scans stream over the codes in blocks and merge a running top-k, so memory stays bounded by the
block size whatever N is; no (n_queries x N) matrix is ever built.
"""

from __future__ import annotations

import numpy as np

#: distance reported for padding slots (k larger than the number of live codes)
PAD_DISTANCE = np.iinfo(np.int32).max

# work-array budget per block (queries x rows x words x 8 bytes)
_BLOCK_BYTES = 8 << 20


def _word_view(codes: np.ndarray) -> np.ndarray:
    """View packed uint8 codes (n, nb) as the widest unsigned words that divide nb."""
    nb = codes.shape[1]
    for dtype in (np.uint64, np.uint32, np.uint16):
        size = np.dtype(dtype).itemsize
        if nb % size == 0 and codes.flags.c_contiguous:
            return codes.view(dtype)
    return codes


def hamming_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances (nq, n) int32 of packed uint8 codes. For small inputs and tests."""
    q, c = _word_view(np.ascontiguousarray(queries)), _word_view(np.ascontiguousarray(codes))
    out = np.empty((q.shape[0], c.shape[0]), np.int32)
    for i in range(q.shape[0]):
        out[i] = np.bitwise_count(c ^ q[i]).sum(axis=1, dtype=np.int32)
    return out


def hamming_topk(
    queries: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k of packed codes, ties broken by the smaller row index.

    Parameters
    ----------
    queries : ndarray of shape (nq, nb), uint8
        Packed query codes.
    codes : ndarray of shape (n, nb), uint8
        Packed database codes.
    k : int
        Neighbours per query (>= 1). When fewer than ``k`` valid codes exist the tail is padded with
        row ``-1`` and distance :data:`PAD_DISTANCE`.
    valid : ndarray of shape (n,), bool, optional
        Rows to consider (``False`` = deleted).

    Returns
    -------
    distances : ndarray of shape (nq, k), int32, ascending
    rows : ndarray of shape (nq, k), int64
    """
    nq, nb = queries.shape
    n = codes.shape[0]
    qw, cw = _word_view(np.ascontiguousarray(queries)), _word_view(codes)
    words = cw.shape[1] if n else 1
    invalid_distance = nb * 8 + 1  # larger than any real distance
    # a unique int64 key per (distance, row) makes argpartition exact and tie-aware
    base = np.int64(max(n, 1))
    best = np.full((nq, k), np.iinfo(np.int64).max, np.int64)
    q_chunk = max(1, min(nq, 64))
    rows_per_block = max(256, _BLOCK_BYTES // (q_chunk * words * 8))
    for q0 in range(0, nq, q_chunk):
        qs = qw[q0 : q0 + q_chunk]
        running = best[q0 : q0 + q_chunk]
        for r0 in range(0, n, rows_per_block):
            block = cw[r0 : r0 + rows_per_block]
            dist = np.bitwise_count(block[None, :, :] ^ qs[:, None, :]).sum(axis=2, dtype=np.int64)
            if valid is not None:
                dist[:, ~valid[r0 : r0 + block.shape[0]]] = invalid_distance
            keys = dist * base + np.arange(r0, r0 + block.shape[0], dtype=np.int64)
            merged = np.concatenate([running, keys], axis=1)
            if merged.shape[1] > k:
                part = np.argpartition(merged, k - 1, axis=1)[:, :k]
                merged = np.take_along_axis(merged, part, axis=1)
            running = merged
        best[q0 : q0 + q_chunk] = running
    best.sort(axis=1)
    distances = best // base
    rows = best % base
    pad = (best == np.iinfo(np.int64).max) | (distances >= invalid_distance)
    rows[pad] = -1
    distances = np.where(pad, PAD_DISTANCE, distances).astype(np.int32)
    return distances, rows


def gather_rows(arrays: list[np.ndarray], starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Read the given global rows from a list of per-segment arrays (memory maps included).

    Parameters
    ----------
    arrays : list of ndarray of shape (n_i, width)
        Segment arrays in row order; ``starts[i]`` is the first global row of ``arrays[i]``.
    starts : ndarray of shape (n_segments,), int64
    rows : ndarray of shape (m,), int64
        Global rows, all valid (no padding).

    Returns
    -------
    ndarray of shape (m, width): only these rows are read from disk, in ascending order per
    segment so that the page cache sees sequential access.
    """
    width = arrays[0].shape[1]
    out = np.empty((rows.shape[0], width), arrays[0].dtype)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    seg = np.searchsorted(starts, sorted_rows, side="right") - 1
    bounds = np.searchsorted(seg, np.arange(len(arrays) + 1))
    for i, array in enumerate(arrays):
        lo, hi = bounds[i], bounds[i + 1]
        if lo < hi:
            out[order[lo:hi]] = array[sorted_rows[lo:hi] - starts[i]]
    return out


# bound on the float32 work arrays of one dot_rows chunk (rows x dim, twice)
_DOT_CHUNK_BYTES = 32 << 20


def _code_values(codes: np.ndarray, dim: int, offset: int, nibbles: bool) -> np.ndarray:
    """Stored values of gathered code rows as float32 (m, dim), plus ``offset`` for integer codes."""
    if nibbles:
        levels = np.empty((codes.shape[0], codes.shape[1] * 2), np.int32)
        levels[:, 0::2] = codes & 0x0F  # even dimension in the low nibble
        levels[:, 1::2] = codes >> 4
        return (levels[:, :dim] + offset).astype(np.float32)
    if codes.dtype.kind in "iu":
        return (codes.astype(np.int32) + offset).astype(np.float32)
    return codes.astype(np.float32)


def dot_rows(
    arrays: list[np.ndarray],
    starts: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    *,
    offset: int = 0,
    nibbles: bool = False,
) -> np.ndarray:
    """Reference of the fused gather + dot: see :func:`quantsearch.kernels.dot_rows`.

    Gathers only the referenced rows (query chunk by query chunk, so memory stays bounded) and
    returns scores (nq, c) float32, nan where ``rows`` is -1.
    """
    nq, c = rows.shape
    dim = weights.shape[1]
    out = np.full((nq, c), np.nan, np.float32)
    chunk = max(1, _DOT_CHUNK_BYTES // max(1, c * dim * 8))
    for q0 in range(0, nq, chunk):
        block = rows[q0 : q0 + chunk]
        present = block >= 0
        if not present.any():
            continue
        values = _code_values(gather_rows(arrays, starts, block[present]), dim, offset, nibbles)
        owner = np.nonzero(present)[0]  # query of each gathered row, within the chunk
        sums = np.einsum("md,md->m", values, weights[q0 : q0 + chunk][owner], dtype=np.float32)
        out[q0 : q0 + chunk][present] = sums
    return out
