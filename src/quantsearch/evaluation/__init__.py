"""Retrieval quality evaluation: metrics that agree with trec_eval."""

from __future__ import annotations

from quantsearch.evaluation.metrics import (
    MetricResult,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    run_from_results,
)

__all__ = ["MetricResult", "evaluate", "mrr_at_k", "ndcg_at_k", "recall_at_k", "run_from_results"]
