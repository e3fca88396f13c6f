"""Chamfer (late-interaction, MaxSim) scoring over ragged token vectors, exact and from int8 codes.

``chamfer(Q, D) = sum_{q in Q} max_{d in D} <q, d>``. Everything works on the ragged layout of
:mod:`.tokens` (flat vectors + offsets) and is vectorised per block of document tokens: one matrix
product of every query token with the block, ``np.maximum.reduceat`` over each document's token
range, ``np.add.reduceat`` over each query's token range.

* :func:`chamfer_scores` / :func:`chamfer_topk`: the exact brute force (the reference).
* :func:`token_neighbours`: the exact top-k document tokens of every query token, for the
  single-vector heuristic (PLAID's first stage: the union of the documents those tokens belong to).
* :func:`quantize_tokens` / :func:`chamfer_rerank`: the int8 token tier (symmetric, one float32
  scale per token) and Chamfer rescoring of candidate documents from it, reading only their tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .._topk import top_k
from ..exceptions import DimensionMismatchError, InvalidArgumentError
from ..kernels import dot_rows
from ..kernels.prefetch import ReadAhead
from .tokens import TokenBatch

__all__ = [
    "TokenTier",
    "chamfer_rerank",
    "chamfer_scores",
    "chamfer_topk",
    "heuristic_candidates",
    "quantize_tokens",
    "token_neighbours",
]

# float32 entries of one (query tokens x document tokens) similarity block
_BLOCK_VALUES = 1 << 24


def _doc_blocks(offsets: np.ndarray, tokens_per_block: int) -> Iterator[tuple[int, int]]:
    """Consecutive document ranges ``[a, b)`` holding at most ``tokens_per_block`` tokens (>= 1 doc)."""
    n = offsets.shape[0] - 1
    a = 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + tokens_per_block, side="right")) - 1
        b = min(max(b, a + 1), n)
        yield a, b
        a = b


def _check_pair(queries: TokenBatch, docs: TokenBatch) -> None:
    if queries.vectors.shape[1] != docs.vectors.shape[1]:
        raise DimensionMismatchError(
            f"query tokens have dim {queries.vectors.shape[1]}, document tokens {docs.vectors.shape[1]}"
        )


def _query_sums(per_token: np.ndarray, queries: TokenBatch) -> np.ndarray:
    """Sum rows of ``per_token`` (Tq, m) over each query's token range -> (nq, m)."""
    return np.add.reduceat(per_token, queries.offsets[:-1], axis=0)


def chamfer_scores(queries: TokenBatch, docs: TokenBatch) -> np.ndarray:
    """Exact Chamfer similarity of every query with every document.

    Parameters
    ----------
    queries : TokenBatch
        Query token vectors (Tq, dim), float32.
    docs : TokenBatch
        Document token vectors (Td, dim), float32 or float16 (a memory map is read block by block).

    Returns
    -------
    ndarray of shape (n_queries, n_docs), float32
    """
    _check_pair(queries, docs)
    q = np.asarray(queries.vectors, np.float32)
    out = np.empty((queries.n, docs.n), np.float32)
    per_block = max(1, _BLOCK_VALUES // max(1, q.shape[0]))
    for a, b in _doc_blocks(docs.offsets, per_block):
        lo, hi = docs.offsets[a], docs.offsets[b]
        sims = q @ np.asarray(docs.vectors[lo:hi], np.float32).T  # (Tq, block tokens)
        maxes = np.maximum.reduceat(sims, docs.offsets[a:b] - lo, axis=1)  # (Tq, b - a)
        out[:, a:b] = _query_sums(maxes, queries)
    return out


def chamfer_topk(queries: TokenBatch, docs: TokenBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Chamfer top-``k`` documents per query (ties to the smaller row).

    Returns
    -------
    scores : ndarray of shape (n_queries, min(k, n_docs)), float32
    rows : ndarray of shape (n_queries, min(k, n_docs)), int64
    """
    scores = chamfer_scores(queries, docs)
    rows = np.broadcast_to(np.arange(docs.n, dtype=np.int64), scores.shape)
    best_rows, best_scores = top_k(rows, scores, k)
    return best_scores.astype(np.float32), best_rows


def token_neighbours(queries: TokenBatch, docs: TokenBatch, k: int) -> np.ndarray:
    """Exact top-``k`` document tokens (by inner product) of every query token.

    Returns
    -------
    ndarray of shape (Tq, k), int64
        Flat token indices into ``docs.vectors``, best first.
    """
    _check_pair(queries, docs)
    q = np.asarray(queries.vectors, np.float32)
    total = docs.vectors.shape[0]
    k = min(k, total)
    best_ids = np.empty((q.shape[0], 0), np.int64)
    best = np.empty((q.shape[0], 0), np.float32)
    per_block = max(k, _BLOCK_VALUES // max(1, q.shape[0]))
    for lo in range(0, total, per_block):
        hi = min(total, lo + per_block)
        sims = q @ np.asarray(docs.vectors[lo:hi], np.float32).T
        ids = np.broadcast_to(np.arange(lo, hi, dtype=np.int64), sims.shape)
        best_ids, best = top_k(np.concatenate([best_ids, ids], 1), np.concatenate([best, sims], 1), k)
    return best_ids


def heuristic_candidates(
    neighbours: np.ndarray, queries: TokenBatch, docs: TokenBatch, k: int
) -> list[np.ndarray]:
    """The single-vector heuristic's candidates: documents of each query token's ``k`` nearest tokens.

    Parameters
    ----------
    neighbours : ndarray of shape (Tq, >= k), int64
        From :func:`token_neighbours`.
    k : int
        Nearest tokens kept per query token.

    Returns
    -------
    list of ndarrays (one per query), int64
        Sorted unique document rows.
    """
    if k > neighbours.shape[1]:
        raise InvalidArgumentError(f"k must be <= {neighbours.shape[1]} (neighbours computed), got {k}")
    doc_of = np.searchsorted(docs.offsets, neighbours[:, :k], side="right") - 1
    return [np.unique(doc_of[queries.offsets[i] : queries.offsets[i + 1]]) for i in range(queries.n)]


def quantize_tokens(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes of token vectors, one scale per token.

    Parameters
    ----------
    vectors : ndarray of shape (T, dim), float

    Returns
    -------
    codes : ndarray of shape (T, dim), int8
        ``round(x / scale)``, in [-127, 127].
    scales : ndarray of shape (T,), float32
        ``max |x| / 127`` per token (1 for an all-zero token); ``x ~ codes * scale``.
    """
    x = np.asarray(vectors, np.float32)
    peak = np.abs(x).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(x / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


class TokenTier:
    """The int8 token tier: per segment, token codes (memory-mapped), scales and document offsets.

    Parameters
    ----------
    codes : list of ndarrays of shape (T_s, dim), int8
        One array (usually a memory map) per segment.
    scales : list of ndarrays of shape (T_s,), float32
    offsets : list of ndarrays of shape (n_s + 1,), int64
        Token range of each document inside its segment.
    readahead : ReadAhead, optional
        Read-ahead of the memory-mapped codes carried over from the previous tier of the same index
        (its pages hinted before stay known); a new one over ``codes`` when None.
    """

    def __init__(
        self,
        codes: list[np.ndarray],
        scales: list[np.ndarray],
        offsets: list[np.ndarray],
        readahead: ReadAhead | None = None,
    ) -> None:
        if not (len(codes) == len(scales) == len(offsets)):
            raise InvalidArgumentError("codes, scales and offsets need one entry per segment")
        self.codes, self.scales, self.offsets = list(codes), list(scales), list(offsets)
        # madvise(WILLNEED) of the candidates' token rows before they are read (kernels.prefetch)
        self.readahead = ReadAhead(self.codes) if readahead is None else readahead.extended(self.codes)
        counts = [o.shape[0] - 1 for o in self.offsets]
        self.starts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=self.starts[1:])
        self.token_starts = np.zeros(len(self.codes) + 1, np.int64)
        np.cumsum([c.shape[0] for c in self.codes], out=self.token_starts[1:])

    @property
    def n(self) -> int:
        """Documents in the tier."""
        return int(self.starts[-1])

    @property
    def dim(self) -> int:
        return int(self.codes[0].shape[1]) if self.codes else 0

    def token_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global token rows of documents ``rows`` (in that order) and each document's token count.

        Returns
        -------
        token_rows : ndarray of shape (sum of lengths,), int64
            Rows of the concatenation of every segment's token codes.
        lengths : ndarray of shape (len(rows),), int64
        """
        rows = np.asarray(rows, np.int64)
        seg = np.searchsorted(self.starts, rows, side="right") - 1
        lo = np.empty(rows.size, np.int64)
        hi = np.empty(rows.size, np.int64)
        for s in np.unique(seg):
            which = seg == s
            local = rows[which] - self.starts[s]
            lo[which] = self.offsets[s][local] + self.token_starts[s]
            hi[which] = self.offsets[s][local + 1] + self.token_starts[s]
        lengths = hi - lo
        first = np.zeros(rows.size, np.int64)
        np.cumsum(lengths[:-1], out=first[1:])
        return np.repeat(lo - first, lengths) + np.arange(int(lengths.sum())), lengths

    def scales_of(self, token_rows: np.ndarray) -> np.ndarray:
        """Scales (m,) float32 of global token rows."""
        seg = np.searchsorted(self.token_starts, token_rows, side="right") - 1
        out = np.empty(token_rows.size, np.float32)
        for s in np.unique(seg):
            which = seg == s
            out[which] = self.scales[s][token_rows[which] - self.token_starts[s]]
        return out


def chamfer_rerank(queries: TokenBatch, tier: TokenTier, rows: np.ndarray) -> np.ndarray:
    """Chamfer scores of each query against its candidate documents, from the int8 token tier.

    Parameters
    ----------
    queries : TokenBatch
        Query token vectors, float32.
    tier : TokenTier
        Every document's token codes; only the candidates' rows are read.
    rows : ndarray of shape (n_queries, c), int64
        Candidate documents per query (global rows); ``-1`` pads.

    Returns
    -------
    ndarray of shape (n_queries, c), float32
        Chamfer similarity of the query with the dequantized tokens; nan at padding.
    """
    if rows.ndim != 2 or rows.shape[0] != queries.n:
        raise DimensionMismatchError(f"rows must have shape ({queries.n}, c), got {rows.shape}")
    if tier.dim != queries.vectors.shape[1]:
        raise DimensionMismatchError(f"query tokens have dim {queries.vectors.shape[1]}, the tier {tier.dim}")
    out = np.full(rows.shape, np.nan, np.float32)
    for i in range(queries.n):
        present = np.flatnonzero(rows[i] >= 0)
        if present.size == 0:
            continue
        token_rows, lengths = tier.token_rows(rows[i, present])
        q = np.ascontiguousarray(queries.item(i), np.float32)
        # every query token against every candidate token: the fused int8 gather + dot kernel reads
        # the rows where they lie in the memory maps; the per-token scale applies to the products
        with tier.readahead.reading(tier.token_starts[:-1], token_rows):
            sims = dot_rows(
                tier.codes,
                tier.token_starts[:-1],
                np.broadcast_to(token_rows, (q.shape[0], token_rows.size)),
                q,
            )
        sims *= tier.scales_of(token_rows)[None, :]
        local = np.zeros(lengths.size, np.int64)
        np.cumsum(lengths[:-1], out=local[1:])
        out[i, present] = np.maximum.reduceat(sims, local, axis=1).sum(axis=0)
    return out
