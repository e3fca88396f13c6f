"""Eval rows bm25 / hybrid / svm with their peers, and fusion tuning, on a real collection (cisi)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.datasets import load_beir
from quantsearch.evaluation import run_eval
from quantsearch.evaluation.configs import parse_config
from quantsearch.evaluation.lexical_configs import TextConfig
from quantsearch.evaluation.tuning import tune_fusion
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.fusion import Fusion

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="module")
def cisi():
    data = load_beir(SHARED / "datasets" / "cisi")
    folder = SHARED / "embeddings" / "cisi"
    assert json.loads((folder / "corpus_ids.json").read_text()) == data.corpus_ids
    return data, np.load(folder / "corpus.f16.npy").astype(np.float32), np.load(folder / "queries.f16.npy")


def test_text_specs_parse() -> None:
    assert parse_config("hybrid-convex@0.7:float32") == TextConfig(
        "hybrid-convex@0.7:float32", kind="hybrid-convex", weight=0.7, exact=True
    )
    assert parse_config("bm25s").peer and not parse_config("bm25").peer
    for bad, message in (("bm25@0.5", "weight"), ("bm25:float32", "dense side"), ("hybrid-rrf@2", "weight")):
        with pytest.raises(InvalidArgumentError, match=message):
            parse_config(bad)


def test_eval_rows_bm25_equals_bm25s_and_hybrid_runs(cisi, tmp_path) -> None:
    pytest.importorskip("bm25s")
    pytest.importorskip("rank_bm25")
    data, docs, queries = cisi
    configs = ["bm25", "hybrid-rrf", "hybrid-convex@0.3", "svm", "bm25s", "rank-bm25"]
    report = run_eval(data, docs, queries.astype(np.float32), configs, batch_repeats=1, workdir=tmp_path)
    rows = {r["config"]: r for r in report.rows}
    assert rows["bm25s"]["peer"] and rows["rank-bm25"]["peer"] and not rows["bm25"]["peer"]
    # the same tokens and BM25 variant: the same quality as bm25s (ties may order differently)
    assert rows["bm25"]["ndcg@10"] == pytest.approx(rows["bm25s"]["ndcg@10"], abs=0.002)
    assert abs(rows["rank-bm25"]["ndcg@10"] - rows["bm25s"]["ndcg@10"]) < 0.02  # its own idf floor
    # on this keyword-heavy collection fusion lands above the dense row and near BM25
    assert rows["hybrid-rrf"]["ndcg@10"] > rows["float32"]["ndcg@10"]
    for r in rows.values():
        assert 0 < r["ndcg@10"] < 1 and r["qps"] > 0


def test_tune_fusion_returns_the_best_weight_of_the_grid(cisi, tmp_path) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    data, docs, queries = cisi
    queries = queries.astype(np.float32)
    with Index.build(
        tmp_path / "i", docs, ids=data.corpus_ids, texts=data.corpus_texts, lexical=True
    ) as index:
        grid = (0.0, 0.25, 0.5, 0.75, 1.0)
        best, ndcg = tune_fusion(
            index,
            queries,
            data.query_texts,
            data.query_ids,
            data.qrels,
            method="rrf",
            weights=grid,
            save=True,
        )
        evaluator = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10"})
        for w in grid:  # the reference: a real hybrid search per weight, scored by pytrec_eval
            res = index.search(
                queries, k=10, mode="hybrid", fusion=Fusion("rrf", w), query_texts=data.query_texts
            )
            run = {
                q: {str(i): float(10 - r) for r, i in enumerate(ids) if i is not None}
                for q, ids in zip(data.query_ids, res.ids.tolist(), strict=True)
            }
            per_query = evaluator.evaluate(run)
            judged = [q for q in data.query_ids if q in data.qrels]
            want = np.mean([per_query[q]["ndcg_cut_10"] for q in judged])
            assert ndcg[w] == pytest.approx(want, abs=1e-6)
        assert ndcg[best.weight] == max(ndcg.values())
        assert index.fusion == best  # saved
