"""The one top-k merge: every ranking in quantsearch (candidate scans in numpy, rescoring stages, the
evaluation harness) keeps its best ``k`` with these two functions, so ties and padding are ranked alike."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["top_k", "topk_blocks"]

# rows scored per block in a blocked scan: bounds the (nq, block) work arrays whatever n is
SCAN_BLOCK = 8192
# below this many columns one lexsort is cheaper than a partition first
_PARTITION_FROM = 512


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` per query by score descending, ties to the smaller row (exact).

    Parameters
    ----------
    rows : ndarray of shape (nq, c), int64
    scores : ndarray of shape (nq, c), float
        NaN (padding) and ``-inf`` (masked rows) rank after every finite score.
    k : int

    Returns
    -------
    rows, scores : ndarrays of shape (nq, min(k, c)), the scores unchanged.
    """
    key = np.where(np.isnan(scores), -np.inf, scores)
    if key.shape[1] > max(4 * k, _PARTITION_FROM):
        # wide inputs: everything scoring at least the k-th best survives (ties included), then an
        # exact sort of the survivors; narrow ones (a rescoring stage's k x oversampling) sort at once
        kth = -np.partition(-key, k - 1, axis=1)[:, k - 1 : k]
        keep = key >= kth
        width = int(keep.sum(axis=1).max())
        if width < key.shape[1]:
            order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
            rows = np.take_along_axis(rows, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            key = np.where(
                np.take_along_axis(keep, order, axis=1), np.take_along_axis(key, order, axis=1), -np.inf
            )
    if key.shape[0] == 1:  # one query (the single-query path): 1-D sort and column take
        first = np.lexsort((rows[0], -key[0]))[:k]
        return rows[:, first], scores[:, first]
    order = np.lexsort((rows, -key), axis=-1)[:, :k]
    # fancy indexing: take_along_axis costs ~10 us of Python per call, the most of a small top-k
    at = np.arange(order.shape[0])[:, None]
    return rows[at, order], scores[at, order]


def topk_blocks(
    score_block: Callable[[int, int], np.ndarray],
    nq: int,
    n: int,
    k: int,
    *,
    valid: np.ndarray | None = None,
    block: int = SCAN_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores descending, ties to the smaller row) over ``n`` rows scored in blocks.

    ``score_block(start, stop)`` returns the (nq, stop - start) float32 scores of those rows. Rows
    with ``valid[row] == False`` are skipped. Returns ``(scores, rows)`` of shape (nq, k); missing
    results are row -1, score nan.
    """
    best_rows = np.empty((nq, 0), np.int64)
    best_scores = np.empty((nq, 0), np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = np.asarray(score_block(start, stop), np.float32)
        rows = np.broadcast_to(np.arange(start, stop, dtype=np.int64), scores.shape)
        if valid is not None:
            scores = np.where(valid[start:stop][None, :], scores, -np.inf)
        best_rows, best_scores = top_k(
            np.concatenate([best_rows, rows], axis=1), np.concatenate([best_scores, scores], axis=1), k
        )
    found = np.isfinite(best_scores)
    best_rows = np.where(found, best_rows, -1)
    best_scores = np.where(found, best_scores, np.float32(np.nan)).astype(np.float32)
    if best_rows.shape[1] < k:
        pad = k - best_rows.shape[1]
        best_rows = np.pad(best_rows, ((0, 0), (0, pad)), constant_values=-1)
        best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=np.nan)
    return best_scores, best_rows
