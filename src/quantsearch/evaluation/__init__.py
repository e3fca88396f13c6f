"""Retrieval quality evaluation: metrics that agree with trec_eval, the configuration sweep and its report."""

from __future__ import annotations

from quantsearch.evaluation.configs import (
    DEFAULT_CONFIGS,
    DEFAULT_PEERS,
    Config,
    FlatConfig,
    IndexConfig,
    PeerConfig,
    parse_config,
    parse_configs,
)
from quantsearch.evaluation.harness import EvalReport, evaluate_dataset, run_eval
from quantsearch.evaluation.metrics import (
    MetricResult,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    run_from_results,
)
from quantsearch.evaluation.report import format_markdown, format_table, write_plots, write_report

__all__ = [
    "DEFAULT_CONFIGS",
    "DEFAULT_PEERS",
    "Config",
    "EvalReport",
    "FlatConfig",
    "IndexConfig",
    "MetricResult",
    "PeerConfig",
    "evaluate",
    "evaluate_dataset",
    "format_markdown",
    "format_table",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_config",
    "parse_configs",
    "recall_at_k",
    "run_eval",
    "run_from_results",
    "write_plots",
    "write_report",
]
