"""The search pipeline: a candidate stage over the codes in RAM followed by rescoring stages.

Stage 1 scans the codes in RAM for ``k x oversampling`` candidates with the candidate quantizer's
own ``scan_topk`` (a Hamming popcount top-k for sign bits, an asymmetric scan for others).
Each rescoring stage reads only those candidates' codes from its tier (a memory map on disk), scores them
asymmetrically (float query . dequantized code) and keeps the best; the last stage keeps ``k``.
Both run on the kernels of :mod:`quantsearch.kernels` (native when built): the scan is a blocked
popcount top-k, and rescoring of the scalar and float tiers is a fused gather + dot that reads
each candidate row straight from the memory map.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..kernels import dot_rows, gather_rows
from ..quantization import FloatQuantizer, Precision, Quantizer, ScalarQuantizer
from ..quantization.reducing import ReducingQuantizer

# bound on the float32 work array of one rescoring chunk (queries x candidates x dim)
_RESCORE_CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class TierView:
    """One tier as the pipeline sees it: a fitted quantizer and the per-segment code arrays."""

    name: str
    quantizer: Quantizer
    arrays: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class IndexView:
    """An immutable snapshot of the searchable state; writers publish a new one after each commit."""

    candidates: Quantizer
    codes: np.ndarray  # (n_rows, nb) uint8, in RAM
    valid: np.ndarray  # (n_rows,) bool, False for deleted rows
    n_live: int
    starts: np.ndarray  # (n_segments,) int64, first row of each segment
    rescore: dict[str, TierView]
    generation: int  # the catalog generation these row numbers belong to


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
) -> PipelineOutput:
    """Search ``queries`` (nq, dim) float32 through the candidate stage and the given rescoring stages.

    ``keep_factor``: an intermediate rescoring stage passes ``k * keep_factor`` candidates on.
    """
    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    n_cand = min(max(k, int(np.ceil(k * oversampling))) if stages else k, view.n_live)
    n_cand = max(n_cand, 1)

    t0 = time.perf_counter()
    scores, rows = view.candidates.scan_topk(queries, view.codes, n_cand, valid=view.valid)
    stage = view.candidates.scan_stage
    timings[stage] = _ms(t0)
    counts[stage] = view.codes.shape[0]

    for i, name in enumerate(stages):
        tier = view.rescore[name]
        keep = k if i == len(stages) - 1 else min(rows.shape[1], k * keep_factor)
        t0 = time.perf_counter()
        counts[f"rescore:{name}"] = rows.shape[1]
        scores = score_candidates(tier, view.starts, queries, rows)
        rows, scores = _top(rows, scores, keep)
        timings[f"rescore:{name}"] = _ms(t0)

    rows, scores = rows[:, :k], scores[:, :k]
    if rows.shape[1] < k:  # fewer live documents than k
        pad = k - rows.shape[1]
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=np.nan)
    return PipelineOutput(rows, scores.astype(np.float32), timings, counts)


def score_candidates(tier: TierView, starts: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Asymmetric scores (nq, c) float32 of each query against its candidates' codes; nan at padding.

    Scalar (int8/uint8/int4) and float tiers are scored by the fused gather + dot kernel, with the
    calibration folded into the query; any other quantizer by its own ``score``.
    """
    prepared = tier.quantizer.prepare_queries(queries)
    form = _linear_form(tier.quantizer, prepared)
    if form is None:
        return _rescore_generic(tier, starts, prepared, rows)
    weights, bias, offset, nibbles = form
    scores = dot_rows(tier.arrays, starts, rows, weights, offset=offset, nibbles=nibbles)
    return scores + bias[:, None]


def _linear_form(
    quantizer: Quantizer, prepared: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, bool] | None:
    """``(weights (nq, dim), bias (nq,), offset, nibbles)`` with score = (code + offset) . weights + bias.

    For a scalar tier q . (level * scale + min) = level . (q * scale) + q . min, and level = code +
    128 for int8; a float tier is a plain dot. None for quantizers scored another way. Exact types
    only: a subclass may override ``score``.
    """
    # the reduction wrappers map the query in prepare_queries and leave the codes to their base
    base = quantizer.base if isinstance(quantizer, ReducingQuantizer) else quantizer
    if type(base) is ScalarQuantizer:
        weights = np.ascontiguousarray(prepared * base.scale_, dtype=np.float32)
        bias = (prepared @ base.min_).astype(np.float32)
        offset = 128 if base.precision is Precision.INT8 else 0
        return weights, bias, offset, base.precision is Precision.INT4
    if type(base) is FloatQuantizer:
        return (
            np.ascontiguousarray(prepared, dtype=np.float32),
            np.zeros(prepared.shape[0], np.float32),
            0,
            False,
        )
    return None


def _rescore_generic(
    tier: TierView, starts: np.ndarray, prepared: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Scores through ``quantizer.score`` on gathered codes, in query chunks so that the gathered
    codes and the float work array stay within a fixed budget whatever the batch size."""
    nq, c = rows.shape
    per_query = max(1, c * max(tier.quantizer.code_bytes, tier.quantizer.code_dim * 4))
    chunk = max(1, _RESCORE_CHUNK_BYTES // per_query)
    scores = np.full((nq, c), np.nan, np.float32)
    for q0 in range(0, nq, chunk):
        block_rows = rows[q0 : q0 + chunk]
        present = block_rows >= 0
        unique, inverse = np.unique(block_rows[present], return_inverse=True)
        if unique.size == 0:
            continue
        codes = gather_rows(list(tier.arrays), starts, unique)  # only the candidates are read from disk
        index = np.zeros(block_rows.shape, np.int64)
        index[present] = inverse
        block = tier.quantizer.score(
            prepared[q0 : q0 + chunk], codes[index]
        )  # codes[index]: (chunk, c, width)
        scores[q0 : q0 + chunk] = np.where(present, block, np.float32(np.nan))
    return scores


def _top(rows: np.ndarray, scores: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``keep`` per query by score descending, ties by smaller row; padding (nan) last."""
    key = np.where(np.isnan(scores), np.inf, -scores.astype(np.float64))
    order = np.lexsort((rows, key), axis=-1)[:, :keep]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
