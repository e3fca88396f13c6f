"""The evaluation harness: configurations, exact rankings, metrics against pytrec_eval, memory, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from quantsearch import Index
from quantsearch._topk import top_k as _merge_top
from quantsearch.datasets import BeirDataset, load_beir
from quantsearch.evaluation import (
    FlatConfig,
    IndexConfig,
    PeerConfig,
    format_markdown,
    format_table,
    parse_config,
    parse_configs,
    run_eval,
    write_report,
)
from quantsearch.evaluation.configs import _FlatSearcher
from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError
from quantsearch.quantization import ScalarQuantizer

pytrec_eval = pytest.importorskip("pytrec_eval")

SHARED = Path(__file__).resolve().parents[2] / "shared"
REQUIRED_ROW_KEYS = {
    "config", "ndcg@10", "recall@100", "retention", "ram_bytes_per_vector", "disk_bytes_per_vector",
    "p50_ms", "p95_ms", "peer", "recall@10", "mrr@10", "qps", "batch_qps",
}  # fmt: skip


def shared(name: str) -> tuple[BeirDataset, np.ndarray, np.ndarray]:
    data = load_beir(SHARED / "datasets" / name)
    folder = SHARED / "embeddings" / name
    assert json.loads((folder / "corpus_ids.json").read_text()) == data.corpus_ids
    docs = np.load(folder / "corpus.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.f16.npy").astype(np.float32)
    return data, docs, queries


def toy_dataset(docs: np.ndarray, queries: np.ndarray, seed: int = 0) -> BeirDataset:
    """A collection over random vectors whose relevant documents are each query's float32 top 3."""
    top = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :3]
    corpus_ids = [f"d{i}" for i in range(len(docs))]
    query_ids = [f"q{i}" for i in range(len(queries))]
    qrels = {q: {corpus_ids[r]: 1 for r in row} for q, row in zip(query_ids, top.tolist(), strict=True)}
    texts = [""] * len(docs)
    return BeirDataset("toy", corpus_ids, texts, texts, query_ids, [""] * len(queries), qrels)


def brute_force_rows(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Top k rows by float64 score, ties to the smaller row."""
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    order = np.lexsort((np.broadcast_to(np.arange(vectors.shape[0]), scores.shape), -scores), axis=-1)
    return order[:, :k]


# ---- configuration specs ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "kind", "fields"),
    [
        ("float32", FlatConfig, {"quantizer": "float32", "truncate_dim": None}),
        ("int4", FlatConfig, {"quantizer": "int4"}),
        ("binary", IndexConfig, {"candidates": "binary", "rescore": ()}),
        ("binary>int8@4", IndexConfig, {"rescore": ("int8",), "oversampling": 4.0}),
        ("binary>int8", IndexConfig, {"oversampling": 10.0}),
        ("binary > int8 > float16@2.5", IndexConfig, {"rescore": ("int8", "float16"), "oversampling": 2.5}),
        ("mrl256:binary>int8@10", IndexConfig, {"truncate_dim": 256}),
        ("MRL128:float32", FlatConfig, {"truncate_dim": 128}),
        ("st-faiss-ubinary@4", PeerConfig, {"multiplier": 4}),
        ("faiss-flat-ip", PeerConfig, {"multiplier": 1}),
    ],
)
def test_parse_config(spec: str, kind: type, fields: dict[str, object]) -> None:
    config = parse_config(spec)
    assert isinstance(config, kind)
    assert config.name == spec.strip().lower()
    assert config.peer == (kind is PeerConfig)
    for key, value in fields.items():
        assert getattr(config, key) == value


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "non-empty"),
        ("int7", "unknown precision"),
        ("int8@4", "exhaustive scan takes no oversampling"),
        ("int8>binary", "needs compact codes"),
        ("binary@4", "needs a rescoring stage"),
        ("binary>int8@0.5", "oversampling must be >= 1"),
        ("binary>int8@x", "unknown precision"),
        ("binary>>int8", "empty stage"),
        ("mrl0:binary", "Matryoshka dim"),
        ("st-faiss-ubinary@2.5", "rescore multiplier"),
        ("st-faiss-ubinary@many", "must be a number"),
    ],
)
def test_parse_config_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_config(spec)


def test_parse_configs_rejects_duplicates() -> None:
    with pytest.raises(InvalidArgumentError, match="listed twice"):
        parse_configs(["binary>int8@4", "BINARY>INT8@4"])


# ---- exact rankings ---------------------------------------------------------------------------------
def test_merge_top_is_exact_with_ties(make_vectors) -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, (20, 300)).astype(np.float32)  # many ties
    rows = np.broadcast_to(np.arange(300), scores.shape)
    got_rows, got_scores = _merge_top(rows, scores, 17)
    ref = np.lexsort((rows, -scores.astype(np.float64)), axis=-1)[:, :17]
    np.testing.assert_array_equal(got_rows, ref)
    np.testing.assert_array_equal(got_scores, np.take_along_axis(scores, ref, axis=1))


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "int4"])
def test_flat_scan_matches_brute_force_over_dequantized_codes(make_vectors, monkeypatch, precision) -> None:
    docs, queries = make_vectors(700, 40, seed=1), make_vectors(15, 40, seed=2)
    docs[5] = docs[6]  # an exact tie: the smaller row must come first
    monkeypatch.setattr(_FlatSearcher, "_BLOCK", 64)  # several blocks merged
    config = FlatConfig(precision, quantizer=precision)
    searcher = config.build(docs, Path("."))
    decoded = searcher.quantizer.decode(searcher.codes)
    exact = queries.astype(np.float64) @ decoded.T.astype(np.float64)
    for k in (1, 10, 699, 700):
        got, ref = searcher.search(queries, k), brute_force_rows(queries, decoded, k)
        # the same scores rank by rank (float32 sums may swap near-ties the float64 reference splits)
        np.testing.assert_allclose(
            np.take_along_axis(exact, got, 1), np.take_along_axis(exact, ref, 1), rtol=0, atol=1e-5
        )
        assert all(len(set(row)) == k for row in got.tolist())
        for row in got.tolist():  # the exact tie goes to the smaller row
            if 5 in row and 6 in row:
                assert row.index(5) < row.index(6)
    if precision == "float32":
        np.testing.assert_array_equal(decoded, docs)  # the reference is the raw vectors


def test_flat_scan_pads_past_the_corpus(make_vectors) -> None:
    docs = make_vectors(5, 8)
    rows = FlatConfig("float32").build(docs, Path(".")).search(docs[:2], 8)
    assert rows.shape == (2, 8)
    assert (rows[:, 5:] == -1).all() and sorted(rows[0, :5]) == list(range(5))


def test_index_configs_search_through_a_real_index(make_vectors, tmp_path) -> None:
    docs, queries = make_vectors(400, 64, seed=4), make_vectors(12, 64, seed=5)
    config = parse_config("binary>int8@3")
    searcher = config.build(docs, tmp_path)
    try:
        with Index.build(tmp_path / "ref", docs, rescore=["int8"]) as ref:
            expected = ref.search(queries, k=7, oversampling=3, with_payload=False).ids
        np.testing.assert_array_equal(searcher.search(queries, 7), expected)
    finally:
        searcher.close()
    assert not any(tmp_path.glob("index-*")), "the searcher's index folder is removed on close"


# ---- memory accounting ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "ram", "disk"),
    [
        ("float32", 4 * 100, 0),
        ("float16", 2 * 100, 0),
        ("int8", 100, 0),
        ("int4", 50, 0),
        ("binary", 13, 0),  # ceil(100 / 8)
        ("binary>int8@2", 13, 100),
        ("binary>int8>float16@2", 13, 300),
        ("mrl64:binary>int4@2", 8, 32),
        ("mrl64:float32", 256, 0),
    ],
)
def test_bytes_per_vector(make_vectors, tmp_path, spec: str, ram: int, disk: int) -> None:
    docs = make_vectors(50, 100)
    searcher = parse_config(spec).build(docs, tmp_path)
    try:
        assert (searcher.ram_bytes_per_vector, searcher.disk_bytes_per_vector) == (ram, disk)
        if isinstance(parse_config(spec), IndexConfig):  # agrees with the index's own report
            info = searcher.index.info()
            in_ram = sum(t["ram_bytes"] for t in info["tiers"])
            assert in_ram == ram * 50
    finally:
        searcher.close()


def test_new_quantizers_need_no_harness_change(make_vectors, tmp_path) -> None:
    # a Quantizer object (here int8 with min/max ranges instead of the string default) is a row as is
    docs, queries = make_vectors(300, 32, seed=7), make_vectors(10, 32, seed=8)
    data = toy_dataset(docs, queries)
    custom = IndexConfig("binary>int8[minmax]@4", rescore=(ScalarQuantizer("int8"),), oversampling=4)
    flat = FlatConfig("int8[minmax]", quantizer=ScalarQuantizer("int8"))
    report = run_eval(data, docs, queries, ["binary>int8@4", custom, flat], batch_repeats=1)
    assert [r["config"] for r in report.rows] == [
        "float32",
        "binary>int8@4",
        "binary>int8[minmax]@4",
        "int8[minmax]",
    ]
    assert report.row("int8[minmax]")["ram_bytes_per_vector"] == 32


# ---- the harness on real collections ----------------------------------------------------------------


def test_metrics_equal_pytrec_eval_on_a_real_run() -> None:
    data, docs, queries = shared("cisi")
    configs = ["float32", "binary", "binary>int8@4", "mrl256:int8", "st-faiss-ubinary@4"]
    report = run_eval(data, docs, queries, configs, batch_repeats=1)
    evaluator = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10", "recall.10,100", "recip_rank"})
    for row in report.rows:
        run_10, run_100 = report.runs[row["config"]][10], report.runs[row["config"]][100]
        assert all(len(docs_) == 10 for docs_ in run_10.values())
        ref_10, ref_100 = evaluator.evaluate(run_10), evaluator.evaluate(run_100)
        assert set(ref_10) == set(data.qrels)  # every judged query is in the run

        def mean(ref: dict, measure: str) -> float:
            return float(np.mean([ref[q][measure] for q in ref]))

        assert row["ndcg@10"] == pytest.approx(mean(ref_10, "ndcg_cut_10"), abs=1e-6)
        assert row["recall@10"] == pytest.approx(mean(ref_10, "recall_10"), abs=1e-6)
        assert row["mrr@10"] == pytest.approx(mean(ref_10, "recip_rank"), abs=1e-6)
        assert row["recall@100"] == pytest.approx(mean(ref_100, "recall_100"), abs=1e-6)
    assert report.row("float32")["retention"] == 1.0
    assert report.row("st-faiss-ubinary@4")["peer"] is True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "float32_ndcg"), [("nfcorpus", 0.316), ("scifact", 0.645), ("cranfield", None), ("cisi", None)]
)
def test_binary_int8_beats_sentence_transformers_rescoring_at_equal_ram(name: str, float32_ndcg) -> None:
    data, docs, queries = shared(name)
    configs = ["binary>int8@4", "binary>int8@10", "st-faiss-ubinary@4", "st-faiss-ubinary@10"]
    report = run_eval(data, docs, queries, configs, batch_repeats=1)
    if float32_ndcg is not None:
        assert report.row("float32")["ndcg@10"] == pytest.approx(float32_ndcg, abs=0.01)
    for m in (4, 10):
        ours, theirs = report.row(f"binary>int8@{m}"), report.row(f"st-faiss-ubinary@{m}")
        assert ours["ram_bytes_per_vector"] == theirs["ram_bytes_per_vector"] == 48
        assert ours["retention"] > theirs["retention"]


def test_run_eval_rejects_mismatched_inputs(make_vectors) -> None:
    docs, queries = make_vectors(50, 16), make_vectors(4, 16, seed=1)
    data = toy_dataset(docs, queries)
    with pytest.raises(DimensionMismatchError, match="docs has 49 rows"):
        run_eval(data, docs[:49], queries, ["binary"])
    with pytest.raises(DimensionMismatchError, match="queries has 3 rows"):
        run_eval(data, docs, queries[:3], ["binary"])
    with pytest.raises(DimensionMismatchError):
        run_eval(data, docs, make_vectors(4, 8), ["binary"])
    with pytest.raises(InvalidArgumentError, match="k=51 exceeds"):
        run_eval(data, docs, queries, ["binary"], k=51)


# ---- the report -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_report():
    from conftest import unit_vectors

    docs, queries = unit_vectors(600, 48, seed=11), unit_vectors(20, 48, seed=12)
    data = toy_dataset(docs, queries)
    configs = ["int8", "binary", "binary>int8@1", "binary>int8@4", "mrl32:binary>int8@4", "faiss-flat-ip"]
    return run_eval(data, docs, queries, configs, batch_repeats=1)


def test_best_for_ram_marks_the_pareto_front(toy_report) -> None:
    rows = toy_report.rows
    for row in rows:
        beaten = any(
            o is not row
            and o["ram_bytes_per_vector"] <= row["ram_bytes_per_vector"]
            and (o["retention"], -o["ram_bytes_per_vector"])
            > (row["retention"], -row["ram_bytes_per_vector"])
            for o in rows
        )
        assert row["best_for_ram"] == (not beaten), row["config"]
    assert any(r["best_for_ram"] for r in rows)


def test_report_files(toy_report, tmp_path) -> None:
    written = write_report(toy_report, tmp_path)
    names = {p.name for p in written}
    assert names == {
        "results.json",
        "results.md",
        "results.txt",
        "retention_vs_bytes.png",
        "retention_vs_latency.png",
    }
    for png in tmp_path.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real chart, not an empty canvas
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["dataset"] == "toy" and "model" in payload
    assert len(payload["rows"]) == 7
    for row in payload["rows"]:
        assert row.keys() >= REQUIRED_ROW_KEYS
        assert 0 < row["retention"] < 1.5 and row["p95_ms"] >= row["p50_ms"] > 0
        assert isinstance(row["peer"], bool)
    assert payload["rows"][0]["config"] == "float32" and payload["rows"][0]["retention"] == 1.0


def test_table_and_markdown_are_sorted_by_ram(toy_report) -> None:
    table = format_table(toy_report).splitlines()
    body = [line for line in table[3:] if line.strip() and not line.startswith("* best")]
    assert len(body) == len(toy_report.rows)
    order = [next(r for r in toy_report.rows if f" {r['config']} " in f" {line} ") for line in body]
    rams = [r["ram_bytes_per_vector"] for r in order]
    assert rams == sorted(rams)
    for line, row in zip(body, order, strict=True):
        assert line.startswith("*") == row["best_for_ram"]
    md = format_markdown(toy_report).splitlines()
    assert sum(line.startswith("| ") for line in md) == len(toy_report.rows) + 1  # header + rows
    assert any("faiss-flat-ip | peer" in line for line in md)
    assert not any(math.isnan(r["retention"]) for r in toy_report.rows)


def test_plot_labels_are_placed_apart_and_placement_ends() -> None:
    """Label placement ends on near-equal retentions (rounding once made it loop forever) and
    leaves labels that are close in x at least ``gap`` apart in y."""
    import random

    from quantsearch.evaluation.report import _label_positions

    rng = random.Random(0)
    for _ in range(300):
        rows = [
            {
                "retention": rng.choice([0.95, 0.9632, 0.97, 1.0]) + rng.random() * 1e-3,
                "b": rng.choice([48, 52, 100]),
            }
            for _ in range(12)
        ]
        gap = 0.028 * rng.choice([0.3, 5.0, 17.3])
        placed = _label_positions(rows, "b", gap)
        assert len(placed) == 12
        for i, (a, ya) in enumerate(placed):
            assert ya <= 100 * a["retention"]
            for b, yb in placed[:i]:
                if abs(math.log(a["b"] / b["b"])) < math.log(2.5):
                    assert abs(ya - yb) >= gap * (1 - 1e-6)


def test_every_preset_parses_and_candidate_stages_go_through_the_index() -> None:
    """The named sweeps of `quantsearch eval --preset` are valid specs; compact single stages (1-2 bits)
    run through a real Index, wider ones are flat scans, and pca/mrl prefixes wrap every stage."""
    from quantsearch.evaluation.configs import PRESETS
    from quantsearch.quantization import PCAQuantizer

    for configs, peers in PRESETS.values():
        parsed = parse_configs(list(configs) + list(peers))
        assert [c.name for c in parsed] == [s.lower() for s in list(configs) + list(peers)]
    by_name = {c.name: c for c in parse_configs(list(PRESETS["codes"][0]))}
    for name in ("rabitq-itq", "int2-itq", "binary", "qat", "ternary"):
        assert isinstance(by_name[name], IndexConfig) and by_name[name].rescore == ()
    for name in ("q4_0", "int8", "rabitq3"):
        assert isinstance(by_name[name], FlatConfig)
    chained = by_name["pca256:rabitq-itq>int8@10"]
    assert isinstance(chained, IndexConfig) and chained.oversampling == 10
    assert all(isinstance(q, PCAQuantizer) and q.dim == 256 for q in (chained.candidates, *chained.rescore))
