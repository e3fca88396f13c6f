"""Retrieval quality metrics (NDCG@k, recall@k, MRR@k) that agree with trec_eval / pytrec_eval.

Conventions, checked against ``pytrec_eval`` (``ndcg_cut``, ``recall``, ``recip_rank``):

* A run is ``{query_id: {doc_id: score}}``; qrels are ``{query_id: {doc_id: relevance}}``.
* Documents are ranked by score descending, ties broken by document id descending (trec_eval compares
  ``docno`` strings with ``strcmp``, reversed); the run's own order is ignored.
* A document is relevant when its relevance is > 0. NDCG uses the linear gain ``rel`` (0 for ``rel <= 0``)
  and the discount ``log2(rank + 1)``; the ideal DCG ranks all judged relevant documents of the query.
* Means are over the queries of ``qrels`` with at least one relevant document. Such a query absent from the
  run scores 0 (as ``trec_eval -c``). pytrec_eval itself reports only the queries present in both, and BEIR
  averages over those, so the means coincide whenever the run covers every judged query. Queries of the run
  without judgements are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from quantsearch._validation import check_positive_int
from quantsearch.exceptions import (
    DimensionMismatchError,
    DuplicateIdError,
    EmptyInputError,
    InvalidArgumentError,
)

__all__ = ["MetricResult", "evaluate", "mrr_at_k", "ndcg_at_k", "recall_at_k", "run_from_results"]

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


class MetricResult(NamedTuple):
    """Value of one metric: the mean over judged queries, and the value of each of them."""

    mean: float
    per_query: dict[str, float]


def _judged(qrels: Qrels) -> list[str]:
    """Queries of ``qrels`` with at least one relevant document, in qrels order."""
    if not isinstance(qrels, Mapping):
        raise InvalidArgumentError(f"qrels must be a dict of dicts, got {type(qrels).__name__}")
    queries = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not queries:
        raise EmptyInputError("qrels holds no query with a relevant document (relevance > 0)")
    return queries


def _ranking(docs: Mapping[str, float] | None, k: int) -> list[str]:
    """Top ``k`` document ids by score descending, then doc id descending (trec_eval's order)."""
    if not docs:
        return []
    ranked = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return [doc for doc, _ in ranked[:k]]


def _ndcg(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    dcg = sum(max(rels.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg


def _recall(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    n_rel = sum(1 for r in rels.values() if r > 0)
    return sum(1 for doc in ranking[:k] if rels.get(doc, 0) > 0) / n_rel


def _mrr(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranking[:k]):
        if rels.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


_Kernel = Callable[[list[str], Mapping[str, int], int], float]
_KERNELS: dict[str, _Kernel] = {"ndcg": _ndcg, "recall": _recall, "mrr": _mrr}


def _compute(run: Run, qrels: Qrels, specs: Iterable[tuple[str, int]]) -> dict[str, MetricResult]:
    if not isinstance(run, Mapping):
        raise InvalidArgumentError(f"run must be a dict of dicts, got {type(run).__name__}")
    specs = list(specs)
    queries = _judged(qrels)
    depth = max(k for _, k in specs)
    per_query: dict[str, dict[str, float]] = {f"{m}@{k}": {} for m, k in specs}
    for q in queries:
        ranking = _ranking(run.get(q), depth)
        for metric, k in specs:
            per_query[f"{metric}@{k}"][q] = _KERNELS[metric](ranking, qrels[q], k)
    return {key: MetricResult(math.fsum(v.values()) / len(v), v) for key, v in per_query.items()}


def _single(metric: str, run: Run, qrels: Qrels, k: int) -> MetricResult:
    k = check_positive_int(k, "k")
    return _compute(run, qrels, [(metric, k)])[f"{metric}@{k}"]


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10) -> MetricResult:
    """NDCG@k with linear gains, as trec_eval's ``ndcg_cut.k``.

    Parameters
    ----------
    run : dict of str to dict of str to float
        Query id -> document id -> score (higher is better).
    qrels : dict of str to dict of str to int
        Query id -> document id -> graded relevance.
    k : int, default 10
        Rank cutoff.

    Returns
    -------
    MetricResult
        Mean over the queries with a relevant document, and per-query values.
    """
    return _single("ndcg", run, qrels, k)


def recall_at_k(run: Run, qrels: Qrels, k: int = 100) -> MetricResult:
    """Recall@k: relevant documents in the top k over all relevant documents, as trec_eval's ``recall.k``.

    Parameters
    ----------
    run : dict of str to dict of str to float
        Query id -> document id -> score.
    qrels : dict of str to dict of str to int
        Query id -> document id -> graded relevance.
    k : int, default 100
        Rank cutoff.

    Returns
    -------
    MetricResult
    """
    return _single("recall", run, qrels, k)


def mrr_at_k(run: Run, qrels: Qrels, k: int = 10) -> MetricResult:
    """MRR@k: reciprocal rank of the first relevant document within the top k (0 if none).

    Equals trec_eval's ``recip_rank`` on the run cut to its top k.

    Parameters
    ----------
    run : dict of str to dict of str to float
        Query id -> document id -> score.
    qrels : dict of str to dict of str to int
        Query id -> document id -> graded relevance.
    k : int, default 10
        Rank cutoff.

    Returns
    -------
    MetricResult
    """
    return _single("mrr", run, qrels, k)


def evaluate(run: Run, qrels: Qrels, ks: Sequence[int] = (10, 100)) -> dict[str, float]:
    """Mean NDCG, recall and MRR at each cutoff.

    Parameters
    ----------
    run : dict of str to dict of str to float
        Query id -> document id -> score.
    qrels : dict of str to dict of str to int
        Query id -> document id -> graded relevance.
    ks : sequence of int, default (10, 100)
        Rank cutoffs.

    Returns
    -------
    dict of str to float
        Keys ``"ndcg@k"``, ``"recall@k"`` and ``"mrr@k"`` for every k in ``ks``.
    """
    ks = [check_positive_int(k, "ks[]") for k in ks]
    if not ks:
        raise EmptyInputError("ks is empty: expected at least one cutoff")
    results = _compute(run, qrels, [(m, k) for k in dict.fromkeys(ks) for m in _KERNELS])
    return {key: result.mean for key, result in results.items()}


def run_from_results(
    query_ids: Sequence[str],
    doc_ids: Any,
    scores: Any,
    *,
    doc_id_map: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Turn search results into a run, skipping padding.

    Parameters
    ----------
    query_ids : sequence of str, length n_queries
        Id of the query of each row.
    doc_ids : ndarray of shape (n_queries, k), int64, or nested sequence of str / int
        Retrieved document ids per query; ``-1`` and ``None`` are padding and are skipped.
    scores : ndarray of shape (n_queries, k), float
        Score of each retrieved document.
    doc_id_map : sequence of str, optional
        When given, integer ids are positions in it (e.g. row numbers -> corpus ids); otherwise every id is
        converted with ``str``.

    Returns
    -------
    dict of str to dict of str to float
        Query id -> document id -> score. A document repeated in one row keeps its first score.
    """
    ids_rows = doc_ids.tolist() if isinstance(doc_ids, np.ndarray) else list(doc_ids)
    score_rows = scores.tolist() if isinstance(scores, np.ndarray) else list(scores)
    if not len(ids_rows) == len(score_rows) == len(query_ids):
        raise DimensionMismatchError(
            f"query_ids, doc_ids and scores must have the same number of rows, got "
            f"{len(query_ids)}, {len(ids_rows)} and {len(score_rows)}"
        )
    run: dict[str, dict[str, float]] = {}
    for i, (q, row_ids, row_scores) in enumerate(zip(query_ids, ids_rows, score_rows, strict=True)):
        if len(row_ids) != len(row_scores):
            raise DimensionMismatchError(
                f"row {i}: doc_ids has {len(row_ids)} entries but scores has {len(row_scores)}"
            )
        query = str(q)
        if query in run:
            raise DuplicateIdError(f"query_ids[{i}] = {query!r} appears twice")
        docs: dict[str, float] = {}
        for d, s in zip(row_ids, row_scores, strict=True):
            if d is None or (isinstance(d, int) and not isinstance(d, bool) and d == -1):
                continue
            if doc_id_map is not None and isinstance(d, int):
                if not 0 <= d < len(doc_id_map):
                    raise InvalidArgumentError(
                        f"row {i}: doc id {d} is outside doc_id_map (0..{len(doc_id_map) - 1})"
                    )
                doc = doc_id_map[d]
            else:
                doc = str(d)
            docs.setdefault(doc, float(s))
        run[query] = docs
    return run
