"""Retrieval modes of :meth:`Index.search`: dense, lexical, hybrid (fusion of both) and svm.

* ``dense``: the vector pipeline (stage 1 -> rescoring), as :func:`~.pipeline.run_pipeline`;
* ``lexical``: BM25 from the lexical tier (:mod:`.lexical`), query texts only;
* ``hybrid``: the top ``fusion.depth`` of both, merged by :func:`~quantsearch.fusion.fuse`;
* ``svm``: the dense pipeline's top ``fusion.depth`` (100), reranked by a linear SVM trained per
  query (:mod:`quantsearch.rerank`) on the vectors of the last rescoring tier (dequantized codes;
  float for a float tier).

Both lists of ``hybrid`` and the SVM's candidates come from a dense pipeline asked for ``depth``
results from ``depth x oversampling`` stage-1 candidates.

A mode's rows are index rows of one catalog generation: the dense ones are the view's, the lexical
ones are read from the catalog with the generation they belong to, and the caller checks both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._topk import top_k
from .._validation import as_float_matrix
from ..exceptions import InvalidArgumentError
from ..fusion import Fusion, fuse
from ..kernels import gather_rows
from .catalog import Catalog
from .documents import check_column
from .lexical import LexicalTier
from .pipeline import IndexView, PipelineOutput, run_pipeline

__all__ = ["MODES", "Mode", "ModeOutput", "run_mode"]

Mode = Literal["dense", "lexical", "hybrid", "svm"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid", "svm")
#: manifest key of the saved default fusion (written only when set)
FUSION_KEY = "fusion"
#: names of the retrievers, in the order of ``ModeOutput.found``'s last axis
RETRIEVERS: tuple[str, str] = ("dense", "lexical")


@dataclass(frozen=True)
class ModeOutput(PipelineOutput):
    """A pipeline output plus what the lexical modes add."""

    generation: int | None = None  # catalog generation of lexical rows (None: dense rows only)
    found: np.ndarray | None = field(default=None)  # (nq, k, 2) bool: found by dense / lexical
    ids: np.ndarray | None = field(default=None)  # (nq, k) object ids of the rows, read with them (lexical)


def split_queries(
    queries: Any, query_texts: Sequence[str] | None, dim: int
) -> tuple[np.ndarray | None, list[str] | None]:
    """``(vectors (nq, dim) float32 or None, texts or None)`` of :meth:`Index.search`'s arguments:
    texts are embedded by the caller when a mode needs vectors."""
    if isinstance(queries, str):
        return None, [queries]
    if isinstance(queries, Sequence) and queries and isinstance(queries[0], str):
        return None, list(queries)
    vectors = as_float_matrix(queries, "queries", dim=dim)
    if query_texts is None:
        return vectors, None
    return vectors, check_column(query_texts, vectors.shape[0], "query_texts", (str,))


def check_mode(mode: str, lexical: LexicalTier | None, has_texts: bool) -> str:
    """Validate ``mode`` against what the index and the queries offer."""
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode in ("lexical", "hybrid"):
        if lexical is None:
            raise InvalidArgumentError(
                f"mode {mode!r} needs a lexical tier; this index has none (create it with lexical=True)"
            )
        if not has_texts:
            raise InvalidArgumentError(
                f"mode {mode!r} needs query texts (search with strings, or query_texts=)"
            )
    return mode


def run_mode(
    mode: str,
    view: IndexView,
    vectors: np.ndarray | None,
    texts: Sequence[str] | None,
    k: int,
    *,
    catalog: Catalog,
    lexical: LexicalTier | None,
    fusion: Fusion | None,
    oversampling: float,
    stages: tuple[str, ...],
    valid: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    stage_options: dict[str, Any] | None = None,
) -> ModeOutput:
    """Run one mode; ``vectors`` (nq, dim) float32 are needed by every mode but ``lexical``.

    A filter is ``valid`` (the view's row mask, for the dense pipeline) and ``allowed`` (every
    matching row, ascending, for the lexical tier); ``stage_options`` (e.g. ``nprobe``) go to the
    dense pipeline.
    """
    dense_options: dict[str, Any] = {"valid": valid, "stage_options": stage_options}
    if mode == "lexical":
        assert lexical is not None and texts is not None
        t0 = time.perf_counter()
        hits = lexical.search(catalog, texts, k, allowed=allowed)
        return ModeOutput(
            hits.rows, hits.scores, {"lexical": _ms(t0)}, {"lexical": k}, hits.generation, ids=hits.ids
        )
    assert vectors is not None
    if mode == "svm" and not stages:
        raise InvalidArgumentError("mode 'svm' reranks vectors of a rescoring tier; this search has none")
    if mode == "dense":
        out = run_pipeline(view, vectors, k, oversampling=oversampling, stages=stages, **dense_options)
        return ModeOutput(out.rows, out.scores, out.timings, out.candidates)
    assert fusion is not None
    depth = min(max(fusion.depth, k), view.n_live)
    # the dense list: its top `depth` after rescoring `depth x oversampling` candidates (its tail
    # needs them as much as a top k does: with only `depth` candidates, binary -> int8 hybrids lost
    # 0.8-2 NDCG points against float32 on cisi and scifact, docs/benchmarks.md)
    dense = run_pipeline(view, vectors, depth, oversampling=oversampling, stages=stages, **dense_options)
    if mode == "svm":
        return _svm(view, vectors, k, dense, stages=stages)
    assert lexical is not None and texts is not None
    t0 = time.perf_counter()
    hits = lexical.search(catalog, texts, depth, allowed=allowed)
    timings = {**dense.timings, "lexical": _ms(t0)}
    t0 = time.perf_counter()
    rows, scores, found = fuse(
        [(dense.rows, dense.scores), (hits.rows, hits.scores)],
        fusion.weights,
        k,
        method=fusion.method,
        rrf_k=fusion.rrf_k,
    )
    timings[f"fusion:{fusion.method}"] = _ms(t0)
    return ModeOutput(rows, scores, timings, {**dense.candidates, "lexical": depth}, hits.generation, found)


def _svm(
    view: IndexView, vectors: np.ndarray, k: int, dense: PipelineOutput, *, stages: tuple[str, ...]
) -> ModeOutput:
    """Rerank the dense list with a per-query linear SVM over the last rescoring tier's vectors."""
    from ..rerank import svm_scores

    depth = dense.rows.shape[1]
    tier = view.rescore[stages[-1]]
    t0 = time.perf_counter()
    rows = np.full((vectors.shape[0], depth), -1, np.int64)
    scores = np.full((vectors.shape[0], depth), np.nan, np.float32)
    prepared = tier.quantizer.prepare_queries(vectors)
    for q in range(vectors.shape[0]):
        cand = dense.rows[q][dense.rows[q] >= 0]
        if cand.size == 0:
            continue
        order = np.argsort(cand, kind="stable")  # gather_rows reads ascending rows segment by segment
        codes = gather_rows(list(tier.arrays), view.starts, cand[order])
        x = np.empty((cand.size, prepared.shape[1]), np.float32)
        x[order] = tier.quantizer.decode(codes)
        rows[q, : cand.size] = cand
        scores[q, : cand.size] = svm_scores(np.asarray(prepared[q], np.float32), x)
    rows, scores = top_k(rows, scores, k)
    timings = {**dense.timings, "svm": _ms(t0)}
    return ModeOutput(rows, scores, timings, {**dense.candidates, "svm": depth})


def sources_of(mode: str, hit: np.ndarray, found: np.ndarray | None) -> list[list[list[str]]] | None:
    """Per hit, the retrievers that found it (lexical and hybrid modes; None for the others).

    ``hit`` (nq, k) bool marks real hits (a row deleted meanwhile is padding).
    """
    if mode == "lexical":
        return [[["lexical"] if h else [] for h in row] for row in hit.tolist()]
    if found is None:
        return None
    return [
        [
            [name for name, f in zip(RETRIEVERS, flags, strict=True) if f] if h else []
            for h, flags in zip(hrow, frow, strict=True)
        ]
        for hrow, frow in zip(hit.tolist(), found.tolist(), strict=True)
    ]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
