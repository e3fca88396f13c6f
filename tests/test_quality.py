"""End-to-end quality on real collections (shared all-MiniLM-L6-v2 embeddings, default settings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantsearch import DEFAULT_OVERSAMPLING, Index
from quantsearch.datasets import load_beir
from quantsearch.evaluation import evaluate, run_from_results

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.mark.parametrize(("name", "float32_ndcg"), [("nfcorpus", 0.316), ("scifact", 0.645)])
def test_binary_int8_rescoring_retains_99_percent(tmp_path: Path, name: str, float32_ndcg: float) -> None:
    folder = SHARED / "embeddings" / name
    data = load_beir(SHARED / "datasets" / name)
    assert json.loads((folder / "corpus_ids.json").read_text()) == data.corpus_ids
    docs = np.load(folder / "corpus.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.f16.npy").astype(np.float32)

    sims = queries @ docs.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    exact = evaluate(
        run_from_results(data.query_ids, np.asarray(data.corpus_ids)[top], np.take_along_axis(sims, top, 1)),
        data.qrels,
        ks=(10,),
    )["ndcg@10"]
    assert exact == pytest.approx(float32_ndcg, abs=0.01)

    with Index.build(tmp_path / "index", docs, ids=data.corpus_ids) as index:
        assert index.default_oversampling == DEFAULT_OVERSAMPLING
        assert index.rescore_tiers == ("int8",)
        results = index.search(queries, k=10, with_payload=False)
        hamming = index.search(queries, k=10, stages=(), with_payload=False)
    rescored = evaluate(run_from_results(data.query_ids, results.ids, results.scores), data.qrels, ks=(10,))
    hamming_only = evaluate(
        run_from_results(data.query_ids, hamming.ids, hamming.scores), data.qrels, ks=(10,)
    )
    assert rescored["ndcg@10"] >= 0.99 * exact
    # rescoring must be what recovers the quality: the Hamming ranking alone is clearly worse
    assert hamming_only["ndcg@10"] < 0.95 * exact
