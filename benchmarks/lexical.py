"""Lexical and hybrid retrieval on the shared collections: BM25 (our FTS5 tier) against bm25s and
rank-bm25, hybrid fusion against both single retrievers, hybrid over binary -> int8 against hybrid
over float32, and per-query SVM reranking, all in one run per collection (NDCG@10 and QPS).

Fusion weights are tuned on a split that is not the test split where one exists (nfcorpus dev,
scifact train; their queries are embedded once with the bundled model and cached) and the tuned rows
are added as ``hybrid-rrf@W`` / ``hybrid-convex@W``. The update cost of the lexical tier (adds with and
without it, compaction) is measured on the same corpus.

    python benchmarks/lexical.py                       # all four collections
    python benchmarks/lexical.py --datasets scifact --json /tmp/lexical.json
    python benchmarks/lexical.py --speed --runs 3      # single-query latency of bm25 vs its peers only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from quantsearch import Index
from quantsearch.datasets import load_beir
from quantsearch.evaluation import run_eval
from quantsearch.evaluation.configs import LEXICAL_CONFIGS, LEXICAL_PEERS
from quantsearch.evaluation.tuning import tune_fusion

sys.path.insert(0, str(Path(__file__).parent))
from quality import SHARED, load_shared  # noqa: E402

TUNING_SPLIT = {"nfcorpus": "dev", "scifact": "train"}
GRID = tuple(round(0.1 * i, 1) for i in range(11))


def tuned_rows(name: str, docs: np.ndarray, workdir: Path) -> tuple[list[str], dict]:
    """``hybrid-*@W`` rows with weights tuned on the collection's dev/train split (if it has one)."""
    split = TUNING_SPLIT.get(name)
    if split is None:
        return [], {}
    from quantsearch.embed import Embedder, EmbeddingCache

    data = load_beir(SHARED / "datasets" / name, split)
    queries, _ = EmbeddingCache().embed(Embedder(), data.query_texts)
    rows, report = [], {"split": split, "queries": len(data.query_ids)}
    with Index.build(
        workdir / f"tune-{name}", docs, ids=data.corpus_ids, texts=data.corpus_texts, lexical=True
    ) as index:
        for method in ("rrf", "convex"):
            fusion, ndcg = tune_fusion(
                index, queries, data.query_texts, data.query_ids, data.qrels, method=method, weights=GRID
            )
            rows.append(f"hybrid-{method}@{fusion.weight:g}")
            report[method] = {"weight": fusion.weight, "ndcg@10": ndcg}
    return rows, report


def update_cost(docs: np.ndarray, texts: list[str], workdir: Path, batch: int = 500) -> dict:
    """Seconds to add the corpus in batches with and without the lexical tier, and to compact."""
    out = {}
    for lexical in (False, True):
        path = workdir / f"update-{lexical}"
        with Index.create(path, docs.shape[1], calibration=docs, lexical=lexical) as index:
            t0 = time.perf_counter()
            for s in range(0, len(texts), batch):
                index.add(docs[s : s + batch], texts=texts[s : s + batch])
            added = time.perf_counter() - t0
            index.delete(list(range(0, len(texts), 3)))
            t0 = time.perf_counter()
            index.compact()
            out["lexical" if lexical else "dense"] = {"add_s": added, "compact_s": time.perf_counter() - t0}
    return out


def speed(names: list[str], runs: int, out: Path | None) -> None:
    """Single-query latency of our BM25 (the whole ``Index.search(mode="lexical")``) against bm25s
    and rank-bm25, ``runs`` times per collection (each run builds afresh); medians of the runs' p50."""
    results = {}
    for name in names:
        data, docs, queries = load_shared(name)
        p50: dict[str, list[float]] = {c: [] for c in SPEED_ROWS}
        ndcg: dict[str, float] = {}
        for _ in range(runs):
            report = run_eval(data, docs, queries, list(SPEED_ROWS), model="all-MiniLM-L6-v2 (shared)")
            for r in report.rows:
                if r["config"] in p50:
                    p50[r["config"]].append(r["p50_ms"])
                    ndcg[r["config"]] = r["ndcg@10"]
        ratios = [a / b for a, b in zip(p50["bm25"], p50["bm25s"], strict=True)]
        med = {c: float(np.median(v)) for c, v in p50.items()}
        print(f"\n{name}: {report.n_docs} docs, {report.n_queries} queries, {runs} runs")
        for c in SPEED_ROWS:
            runs_ms = " ".join(f"{v:.3f}" for v in p50[c])
            print(f"{c:<10} NDCG@10 {ndcg[c]:.4f}  p50 ms median {med[c]:.3f}  (runs: {runs_ms})")
        print(
            f"bm25 / bm25s single-query latency: median of runs' p50 {med['bm25'] / med['bm25s']:.2f}x "
            f"(per run: {' '.join(f'{r:.2f}' for r in ratios)})"
        )
        results[name] = {"p50_ms": p50, "median_p50_ms": med, "ratios": ratios, "ndcg@10": ndcg}
        if out:
            out.write_text(json.dumps(results, indent=1))
        sys.stdout.flush()


SPEED_ROWS = ("bm25", "bm25s", "rank-bm25")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "scifact", "cranfield", "cisi"])
    parser.add_argument("--json", type=Path, default=None, help="written after each collection")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the queries for batch timings")
    parser.add_argument("--speed", action="store_true", help="only the latency of bm25, bm25s and rank-bm25")
    parser.add_argument("--runs", type=int, default=3, help="--speed: runs per collection (medians)")
    args = parser.parse_args()
    if args.speed:
        speed(args.datasets, args.runs, args.json)
        return
    results = {}
    for name in args.datasets:
        data, docs, queries = load_shared(name)
        with tempfile.TemporaryDirectory(prefix="lexical-bench-") as tmp:
            extra, tuning = tuned_rows(name, docs, Path(tmp))
            configs = list(LEXICAL_CONFIGS) + extra + list(LEXICAL_PEERS)
            report = run_eval(
                data, docs, queries, configs, model="all-MiniLM-L6-v2 (shared)", batch_repeats=args.repeats
            )
            cost = update_cost(docs, data.corpus_texts, Path(tmp))
        rows = {r["config"]: r for r in report.rows}
        print(f"\n{name}: {report.n_docs} docs, {report.n_queries} queries")
        print(f"{'config':<24} {'NDCG@10':>8} {'R@100':>7} {'p50 ms':>8} {'QPS':>8} {'batch QPS':>10}")
        for r in report.rows:
            print(
                f"{r['config']:<24} {r['ndcg@10']:>8.4f} {r['recall@100']:>7.4f} {r['p50_ms']:>8.3f} "
                f"{r['qps']:>8.0f} {r['batch_qps']:>10.0f}"
            )
        bm25, peer = rows["bm25"], rows["bm25s"]
        dense = rows["binary>int8@10"]
        print(
            f"bm25 - bm25s: {100 * (bm25['ndcg@10'] - peer['ndcg@10']):+.2f} NDCG points; "
            f"single-query latency bm25 / bm25s: {bm25['p50_ms'] / peer['p50_ms']:.2f}x "
            f"(QPS {bm25['qps']:.0f} vs {peer['qps']:.0f})"
        )
        best_single = max(bm25["ndcg@10"], dense["ndcg@10"])
        for h in [c for c in rows if c.startswith("hybrid")]:
            print(f"{h:<24} vs best single retriever: {100 * (rows[h]['ndcg@10'] - best_single):+.2f} points")
        for method in ("rrf", "convex"):
            diff = rows[f"hybrid-{method}"]["ndcg@10"] - rows[f"hybrid-{method}:float32"]["ndcg@10"]
            print(f"hybrid-{method} binary->int8 - float32: {100 * diff:+.2f} points")
        svm_int8 = rows["svm"]["ndcg@10"] - dense["ndcg@10"]
        svm_f32 = rows["svm:float32"]["ndcg@10"] - rows["float32"]["ndcg@10"]
        print(f"svm - dense: {100 * svm_int8:+.2f} points (int8), {100 * svm_f32:+.2f} (float32)")
        weights = {key: v["weight"] if isinstance(v, dict) else v for key, v in tuning.items()}
        print(f"tuning: {json.dumps(weights)}")
        print(f"update cost ({len(data.corpus_texts)} docs, batches of 500): {json.dumps(cost)}")
        results[name] = {"report": report.to_json(), "tuning": tuning, "update_cost": cost}
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
