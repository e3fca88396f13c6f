from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from quantsearch.evaluation import (
    MetricResult,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    run_from_results,
)
from quantsearch.exceptions import DimensionMismatchError, EmptyInputError, InvalidArgumentError

pytrec_eval = pytest.importorskip("pytrec_eval")

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _pytrec(run, qrels, ks):
    measures = {f"ndcg_cut.{k}" for k in ks} | {f"recall.{k}" for k in ks} | {"recip_rank"}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(60)]  # "d10" < "d9" as strings: exercises string tie-breaking
    qrels: dict[str, dict[str, int]] = {}
    for q in range(40):
        judged = rng.choice(docs, size=int(rng.integers(1, 15)), replace=False)
        qrels[f"q{q}"] = {str(d): int(rng.integers(-1, 4)) for d in judged}
    run: dict[str, dict[str, float]] = {}
    for q in range(45):
        if q % 7 == 3:
            continue  # judged queries missing from the run
        retrieved = rng.choice(docs, size=int(rng.integers(1, 40)), replace=False)
        levels = int(rng.integers(2, 6))  # few distinct scores -> many ties
        run[f"q{q}"] = {str(d): float(rng.integers(0, levels)) / levels for d in retrieved}
    return run, qrels


@pytest.mark.parametrize("seed", range(8))
def test_random_runs_match_pytrec_eval(seed: int) -> None:
    run, qrels = _random_case(seed)
    ks = (1, 3, 5, 10, 100)
    ref = _pytrec(run, qrels, ks)
    judged = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    assert any(q not in run for q in judged)
    assert any(q not in judged for q in qrels)
    for k in ks:
        ndcg, recall, mrr = ndcg_at_k(run, qrels, k), recall_at_k(run, qrels, k), mrr_at_k(run, qrels, k)
        assert list(ndcg.per_query) == judged
        for q in judged:
            r = ref.get(q)
            exp_ndcg = r[f"ndcg_cut_{k}"] if r else 0.0
            exp_recall = r[f"recall_{k}"] if r else 0.0
            rr = r["recip_rank"] if r else 0.0
            exp_mrr = rr if rr > 0 and 1 / rr <= k + 1e-9 else 0.0
            assert ndcg.per_query[q] == pytest.approx(exp_ndcg, abs=1e-9)
            assert recall.per_query[q] == pytest.approx(exp_recall, abs=1e-9)
            assert mrr.per_query[q] == pytest.approx(exp_mrr, abs=1e-9)
        exp_mean = sum(ref[q][f"ndcg_cut_{k}"] for q in judged if q in ref) / len(judged)
        assert ndcg.mean == pytest.approx(exp_mean, abs=1e-9)


def test_tie_breaking_is_doc_id_descending() -> None:
    qrels = {"q": {"a": 1, "b": 0, "c": 2, "z": -1}}
    run = {"q": {"a": 0.5, "b": 0.5, "c": 0.5, "z": 0.9}}  # ranked z, c, b, a
    idcg = 2 + 1 / math.log2(3)
    assert ndcg_at_k(run, qrels, 1).mean == 0.0  # negative relevance gains nothing
    assert ndcg_at_k(run, qrels, 2).mean == pytest.approx((2 / math.log2(3)) / idcg, abs=1e-12)
    assert ndcg_at_k(run, qrels, 10).mean == pytest.approx((2 / math.log2(3) + 1 / math.log2(5)) / idcg)
    assert mrr_at_k(run, qrels, 10).mean == 0.5
    assert recall_at_k(run, qrels, 2).mean == 0.5
    ref = _pytrec(run, qrels, (1, 2, 10))["q"]
    assert ndcg_at_k(run, qrels, 2).mean == pytest.approx(ref["ndcg_cut_2"], abs=1e-12)
    assert ref["recip_rank"] == 0.5


def test_evaluate_keys_and_values() -> None:
    run, qrels = _random_case(123)
    out = evaluate(run, qrels, ks=(10, 100))
    assert set(out) == {"ndcg@10", "recall@10", "mrr@10", "ndcg@100", "recall@100", "mrr@100"}
    assert out["ndcg@10"] == ndcg_at_k(run, qrels, 10).mean
    assert out["recall@100"] == recall_at_k(run, qrels, 100).mean
    assert isinstance(ndcg_at_k(run, qrels, 10), MetricResult)


def test_validation() -> None:
    run, qrels = {"q": {"a": 1.0}}, {"q": {"a": 1}}
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="k"):
            ndcg_at_k(run, qrels, bad)  # type: ignore[arg-type]
    with pytest.raises(EmptyInputError):
        ndcg_at_k(run, {"q": {"a": 0}}, 10)
    with pytest.raises(EmptyInputError):
        evaluate(run, qrels, ks=())
    with pytest.raises(InvalidArgumentError):
        evaluate([], qrels)  # type: ignore[arg-type]


def test_run_from_results_skips_padding() -> None:
    ids = np.array([[2, 0, -1], [1, -1, -1]], dtype=np.int64)
    scores = np.array([[0.9, 0.5, 0.0], [0.7, 0.0, 0.0]], dtype=np.float32)
    assert run_from_results(["q1", "q2"], ids, scores) == {
        "q1": {"2": pytest.approx(0.9), "0": 0.5},
        "q2": {"1": pytest.approx(0.7)},
    }
    mapped = run_from_results(["q1", "q2"], ids, scores, doc_id_map=["a", "b", "c"])
    assert list(mapped["q1"]) == ["c", "a"] and list(mapped["q2"]) == ["b"]
    assert run_from_results(["q"], [["x", None, "y"]], [[3.0, 2.0, 1.0]]) == {"q": {"x": 3.0, "y": 1.0}}
    with pytest.raises(DimensionMismatchError):
        run_from_results(["q1"], ids, scores)
    with pytest.raises(DimensionMismatchError):
        run_from_results(["q"], [["x", "y"]], [[1.0]])
    with pytest.raises(InvalidArgumentError):
        run_from_results(["q"], [[5]], [[1.0]], doc_id_map=["a"])


def _qrels(name: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    lines = (SHARED / "datasets" / name / "qrels" / "test.tsv").read_text().splitlines()[1:]
    for line in lines:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    return qrels


@pytest.mark.parametrize(("name", "expected"), [("nfcorpus", 0.3162), ("scifact", 0.6451)])
def test_real_run_matches_pytrec_eval(name: str, expected: float) -> None:
    folder = SHARED / "embeddings" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    corpus = np.load(folder / "corpus.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.f16.npy").astype(np.float32)
    corpus_ids = json.loads((folder / "corpus_ids.json").read_text())
    query_ids = json.loads((folder / "query_ids.json").read_text())
    sims = queries @ corpus.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :100]
    run = run_from_results(query_ids, top, np.take_along_axis(sims, top, axis=1), doc_id_map=corpus_ids)
    qrels = _qrels(name)

    ours = evaluate(run, qrels, ks=(10, 100))
    ref = _pytrec(run, qrels, (10, 100))
    assert set(ref) == set(qrels)  # the run covers every judged query, so the means are comparable
    pairs = [("ndcg@10", "ndcg_cut_10"), ("recall@10", "recall_10"), ("recall@100", "recall_100")]
    for key, measure in pairs:
        assert ours[key] == pytest.approx(np.mean([r[measure] for r in ref.values()]), abs=1e-9)
    assert ours["mrr@100"] == pytest.approx(np.mean([r["recip_rank"] for r in ref.values()]), abs=1e-9)
    assert ours["ndcg@10"] == pytest.approx(expected, abs=5e-4)
