"""Target recall: measure an ANN stage's recall against the exact pipeline when its structure is built.

``Index.search(..., target_recall=0.95)`` picks the cheapest setting of the stage's knob (``ef``,
``nprobe``) whose measured recall reaches the target. The measurement (:func:`calibrate_stage`) runs
when the structure is built or has doubled since the last one (``CandidateStage.calibration_due``):

- queries: a seeded sample of the collection's own live rows (``SAMPLE`` of them), decoded from the
  last rescoring tier (int8 dequantized: close to the original vectors);
- reference: the exact pipeline (exact scan + the same rescoring, same ``k`` and oversampling);
- recall@``K`` of the stage's pipeline at every setting of ``calibration_grid()``, with each query's
  own row left out of both lists (it is trivially found: the sample is held out of the comparison).

The ``(setting, recall)`` table is saved with the stage (``set_calibration``). Recall measured on the
collection's own rows tracks, but need not equal, the recall of real queries, which sit further from
the documents (docs/benchmarks.md compares them).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from ..kernels import gather_rows
from .pipeline import IndexView, run_pipeline
from .stages import ExactScan

__all__ = ["calibrate_stage"]

logger = logging.getLogger(__name__)

SAMPLE = 200
K = 10


def sample_queries(view: IndexView, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, vectors)``: a seeded sample of live rows, ascending, and their decoded vectors."""
    live = np.flatnonzero(view.valid)
    rows = np.sort(np.random.default_rng(seed).choice(live, size=min(sample, live.size), replace=False))
    if view.rescore:
        tier = list(view.rescore.values())[-1]
        vectors = tier.quantizer.decode(gather_rows(list(tier.arrays), view.starts, rows))
    else:
        vectors = view.stage.quantizer.decode(view.codes[rows])
    return rows, np.ascontiguousarray(vectors, dtype=np.float32)


def calibrate_stage(
    view: IndexView, root: Path, *, oversampling: float, sample: int = SAMPLE, k: int = K, seed: int = 0
) -> list[tuple[int, float]] | None:
    """Measure and save ``view.stage``'s recall table; ``None`` when there is nothing to calibrate."""
    stage = view.stage
    grid = stage.calibration_grid()
    knob = stage.knob
    if not grid or knob is None or view.n_live < 4 * (k + 1):
        return None
    t0 = time.perf_counter()
    rows, queries = sample_queries(view, sample, seed)
    stages = tuple(view.rescore)
    exact_view = dataclasses.replace(view, stage=ExactScan(stage.quantizer))
    want = run_pipeline(exact_view, queries, k + 1, oversampling=oversampling, stages=stages).rows
    truth = [set(r.tolist()) - {int(self_row), -1} for r, self_row in zip(want, rows, strict=True)]
    table = []
    for setting in grid:
        got = run_pipeline(
            view, queries, k + 1, oversampling=oversampling, stages=stages, stage_options={knob: setting}
        ).rows
        hits = [len(t & set(g.tolist())) / max(len(t), 1) for g, t in zip(got, truth, strict=True)]
        table.append((int(setting), float(np.mean(hits))))
        if table[-1][1] >= 0.999:
            break  # larger settings cannot do better
    stage.set_calibration(root, table, rows=view.codes.shape[0], generation=view.generation)
    logger.info(
        "calibrated %s on %d rows in %.1f s: %s", stage.name, view.codes.shape[0], time.perf_counter() - t0,
        ", ".join(f"{knob}={s}: {r:.3f}" for s, r in table),
    )  # fmt: skip
    return table
