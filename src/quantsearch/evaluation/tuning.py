"""Tune the fusion weight of hybrid search on judged queries (a dev or train split), then save it.

The dense and lexical lists are computed once per query; each candidate weight only re-fuses them,
so a grid of 21 weights costs about one search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from quantsearch._validation import as_float_matrix, check_positive_int
from quantsearch.evaluation.metrics import evaluate
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.fusion import Fusion, FusionMethod, fuse

__all__ = ["tune_fusion"]


def tune_fusion(
    index: Any,
    queries: np.ndarray,
    texts: Sequence[str],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    method: FusionMethod = "convex",
    weights: Sequence[float] = tuple(np.round(np.linspace(0, 1, 21), 2)),
    k: int = 10,
    depth: int = 100,
    rrf_k: float = 60.0,
    save: bool = False,
) -> tuple[Fusion, dict[float, float]]:
    """The dense weight with the best mean NDCG@k on the given judged queries.

    Parameters
    ----------
    index : Index
        An index with a lexical tier; its ids (as strings) are the qrels' document ids.
    queries : ndarray of shape (n_queries, dim), float32
    texts : sequence of n_queries str
    query_ids : sequence of n_queries str
    qrels : dict of str to dict of str to int
        Judgements of the tuning split (never the test split).
    method : {"rrf", "convex"}
    weights : sequence of float in [0, 1]
        Candidate dense weights; ties go to the first (the grid's order).
    k, depth, rrf_k
        The cutoff of NDCG, candidates per retriever, and RRF's constant.
    save : bool
        Save the winning fusion with the index (:meth:`Index.set_fusion`).

    Returns
    -------
    fusion : Fusion
    ndcg : dict of float to float
        Mean NDCG@k of every weight tried.
    """
    queries = as_float_matrix(queries, "queries", dim=index.dim)
    if not len(texts) == len(query_ids) == queries.shape[0]:
        raise InvalidArgumentError(
            f"queries ({queries.shape[0]}), texts ({len(texts)}) and query_ids ({len(query_ids)}) "
            "differ in length"
        )
    k = check_positive_int(k, "k")
    grid = [Fusion(method, float(w), rrf_k, depth) for w in weights]  # validates every weight
    if not grid:
        raise InvalidArgumentError("weights is empty")
    depth = min(depth, len(index))
    dense = index.search(queries, k=depth, with_payload=False)
    lexical = index.search(list(texts), k=depth, mode="lexical", with_payload=False)
    codes: dict[Any, int] = {}  # one stand-in row per distinct id, shared by both lists
    lists = [(_rows(r.ids, r.valid, codes), r.scores) for r in (dense, lexical)]
    ids = {row: str(i) for i, row in codes.items()}
    judged = {q: dict(qrels.get(q, {})) for q in query_ids}
    ndcg: dict[float, float] = {}
    for fusion in grid:
        rows, _, _ = fuse(lists, fusion.weights, k, method=method, rrf_k=rrf_k)
        run = {
            q: {ids[r]: float(k - rank) for rank, r in enumerate(ranked) if r >= 0}
            for q, ranked in zip(query_ids, rows.tolist(), strict=True)
        }
        ndcg[fusion.weight] = evaluate(run, judged, ks=(k,))[f"ndcg@{k}"]
    best = max(grid, key=lambda f: ndcg[f.weight])  # max keeps the first of equal values
    if save:
        index.set_fusion(best)
    return best, ndcg


def _rows(ids: np.ndarray, valid: np.ndarray, codes: dict[Any, int]) -> np.ndarray:
    """Stand-in row numbers (nq, c) int64 for ids: ``codes`` maps each id to one, -1 at padding."""
    out = np.full(ids.shape, -1, np.int64)
    for pos in zip(*np.nonzero(valid), strict=True):
        out[pos] = codes.setdefault(
            ids[pos].item() if isinstance(ids[pos], np.generic) else ids[pos], len(codes)
        )
    return out
