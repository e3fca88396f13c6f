"""The search pipeline: a candidate stage over the codes in RAM followed by rescoring stages.

Stage 1 asks the index's :class:`~quantsearch.index.stages.CandidateStage` for ``k x oversampling``
candidates (the exact scan runs the candidate quantizer's own kernel: a Hamming popcount top-k for
sign bits, an asymmetric bit-plane scan for others). Each rescoring stage scores only those
candidates through its tier's :meth:`~quantsearch.quantization.Quantizer.rescore` (a fused gather +
dot straight from the memory maps for scalar and float tiers) and keeps the best; the last keeps ``k``.
Nothing here knows a concrete quantizer: a new code family brings its own scan and rescoring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._topk import top_k
from ..kernels.prefetch import ReadAhead
from ..quantization import Quantizer
from .stages import CandidateStage, filter_widening


@dataclass(frozen=True)
class TierView:
    """One rescoring tier as the pipeline sees it: a fitted quantizer and the per-segment code arrays."""

    name: str
    quantizer: Quantizer
    arrays: tuple[np.ndarray, ...]
    # read-ahead of the memory-mapped arrays (None: read on first touch); kept across views
    readahead: ReadAhead | None = None


@dataclass(frozen=True)
class IndexView:
    """An immutable snapshot of the searchable state; writers publish a new one after each commit."""

    stage: CandidateStage
    codes: np.ndarray  # (n_rows, nb) uint8, in RAM
    valid: np.ndarray  # (n_rows,) bool, False for deleted rows
    n_live: int
    starts: np.ndarray  # (n_segments,) int64, first row of each segment
    rescore: dict[str, TierView]
    generation: int  # the catalog generation these row numbers belong to
    # (n_rows,) int32/int64 id of each row (integer-id indexes), current while the catalog's
    # data_version is ``data_version`` (no other connection committed since); else None
    ids: np.ndarray | None = None
    data_version: int = 0


@dataclass(frozen=True)
class PipelineOutput:
    rows: np.ndarray  # (nq, k) int64, -1 padding
    scores: np.ndarray  # (nq, k) float32, nan padding
    timings: dict[str, float]
    candidates: dict[str, int]


def run_pipeline(
    view: IndexView,
    queries: np.ndarray,
    k: int,
    *,
    oversampling: float,
    stages: tuple[str, ...],
    keep_factor: int = 2,
    valid: np.ndarray | None = None,
    stage_options: dict[str, Any] | None = None,
) -> PipelineOutput:
    """Search ``queries`` (nq, dim) float32 through the candidate stage and the given rescoring stages.

    ``keep_factor``: an intermediate rescoring stage passes ``k * keep_factor`` candidates on.
    ``valid`` (n_rows,) bool replaces the view's mask (a filter ANDed into it; the candidates are
    widened by ``1 / sqrt(share admitted)``, see :func:`~.stages.filter_widening`); ``stage_options`` are
    passed to the candidate stage (``nprobe``, ``ef``, ``target_recall``).
    """
    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    n_live = view.n_live if valid is None else int(np.count_nonzero(valid))
    valid = view.valid if valid is None else valid
    if stages and n_live < view.n_live:  # a filter: widen the candidates (see filter_widening)
        oversampling *= filter_widening(max(n_live, 1) / view.n_live)
    n_cand = min(max(k, int(np.ceil(k * oversampling))) if stages else k, n_live)
    n_cand = max(n_cand, 1)

    t0 = time.perf_counter()
    scores, rows = view.stage.search(queries, view.codes, n_cand, valid=valid, **(stage_options or {}))
    timings[view.stage.name] = _ms(t0)
    counts[view.stage.name] = view.codes.shape[0]

    for i, name in enumerate(stages):
        tier = view.rescore[name]
        keep = k if i == len(stages) - 1 else min(rows.shape[1], k * keep_factor)
        t0 = time.perf_counter()
        counts[f"rescore:{name}"] = rows.shape[1]
        scores = score_candidates(tier, view.starts, queries, rows)
        rows, scores = top_k(rows, scores, keep)
        timings[f"rescore:{name}"] = _ms(t0)

    rows, scores = rows[:, :k], scores[:, :k]
    if rows.shape[1] < k:  # fewer live documents than k
        pad = k - rows.shape[1]
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=np.nan)
    return PipelineOutput(rows, scores.astype(np.float32, copy=False), timings, counts)


def score_candidates(tier: TierView, starts: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Asymmetric scores (nq, c) float32 of each query against its candidates' codes; nan at padding.

    The candidates' pages of a memory-mapped tier are first asked of the OS all at once (those not
    asked before: :class:`~quantsearch.kernels.prefetch.ReadAhead`), so that a tier out of the page
    cache is read with every request in flight instead of one page fault after another."""
    prepared = tier.quantizer.prepare_queries(queries)
    if tier.readahead is None:
        return tier.quantizer.rescore(prepared, tier.arrays, starts, rows)
    with tier.readahead.reading(starts, rows):
        return tier.quantizer.rescore(prepared, tier.arrays, starts, rows)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
