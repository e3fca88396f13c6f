"""Tune the fusion weight of hybrid search on judged queries (a dev or train split), then save it.

Each weight of the grid is scored with the hybrid search itself (ties broken as it breaks them), so
the tuned weight's NDCG is what the saved fusion then delivers on those queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from quantsearch._validation import as_float_matrix, check_positive_int
from quantsearch.evaluation.metrics import evaluate
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.fusion import Fusion, FusionMethod

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
    judged = {q: dict(qrels.get(q, {})) for q in query_ids}
    ndcg: dict[float, float] = {}
    for fusion in grid:  # the very search a hybrid query runs (ties included), once per weight
        res = index.search(
            queries, k=k, mode="hybrid", fusion=fusion, query_texts=list(texts), with_payload=False
        )
        run = {
            q: {str(i): float(k - rank) for rank, (i, ok) in enumerate(zip(ids, valid, strict=True)) if ok}
            for q, ids, valid in zip(query_ids, res.ids.tolist(), res.valid.tolist(), strict=True)
        }
        ndcg[fusion.weight] = evaluate(run, judged, ks=(k,))[f"ndcg@{k}"]
    best = max(grid, key=lambda f: ndcg[f.weight])  # max keeps the first of equal values
    if save:
        index.set_fusion(best)
    return best, ndcg
