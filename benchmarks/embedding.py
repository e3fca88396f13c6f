"""Embedding speed and quality of every backend, in one run.

For each backend (torch float32 first: the reference of every ratio):

- docs/s on scifact's abstracts (long texts, truncated at 256 tokens) and on its queries (short);
- query latency p50: one short query at a time, as a search embeds it;
- NDCG@10 of the backend's embeddings on the four shared collections, exact float32 and through the default
  binary -> int8 pipeline (a real Index), via ``quantsearch.evaluation.run_eval``.

Speed rounds interleave the backends (each round runs every backend once), so that load from other processes
hits them alike; the medians over rounds are reported. Full-collection embeddings are cached under
``--cache-dir`` (EmbeddingCache, keyed by backend), so quality is computed once per backend and collection.

    python benchmarks/embedding.py --json docs/embedding.json [--backends torch onnx-int8 static]
        [--n-long 256] [--rounds 3] [--quality-backends onnx-int8 static] [--datasets nfcorpus scifact]

The JSON has ``rows``: ``{backend, docs_per_s_long, docs_per_s_short, query_p50_ms, ndcg10: {dataset:
value}, ndcg10_pipeline: {dataset: value}, ...}`` plus the ratios to torch. ``--shared-torch`` takes torch's
full-collection embeddings from ../shared/embeddings (made by the same model and recipe: tests check that
our torch embedder reproduces them to cosine > 0.999) instead of recomputing them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch.datasets import load_beir
from quantsearch.embed import Embedder, EmbeddingCache
from quantsearch.evaluation.harness import run_eval

SHARED = Path(__file__).resolve().parents[2] / "shared"
ALL_BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "static")
DATASETS = ("nfcorpus", "scifact", "cranfield", "cisi")
PIPELINE = "binary>int8"  # the default index: binary candidates, int8 rescoring at the default oversampling


def speed(embedders: dict[str, Embedder], long: list[str], short: list[str], rounds: int) -> dict[str, Any]:
    """Interleaved rounds: docs/s on long and short texts, and single-query p50 (ms)."""
    for emb in embedders.values():  # load / export and warm up outside the timings
        emb.embed(long[:8])
        emb.embed(short[:8])
    long_s: dict[str, list[float]] = {b: [] for b in embedders}
    short_s: dict[str, list[float]] = {b: [] for b in embedders}
    single: dict[str, list[float]] = {b: [] for b in embedders}
    for r in range(rounds):
        for name, emb in embedders.items():
            t0 = time.perf_counter()
            emb.embed(long)
            long_s[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            emb.embed(short)
            short_s[name].append(time.perf_counter() - t0)
            for text in short[:50]:
                t0 = time.perf_counter()
                emb.embed([text])
                single[name].append(time.perf_counter() - t0)
            print(
                f"  round {r + 1}: {name:<14} long {len(long) / long_s[name][-1]:8.1f} docs/s  "
                f"short {len(short) / short_s[name][-1]:8.1f} docs/s",
                file=sys.stderr,
                flush=True,
            )
    return {
        name: {
            "docs_per_s_long": round(len(long) / statistics.median(long_s[name]), 2),
            "docs_per_s_short": round(len(short) / statistics.median(short_s[name]), 2),
            "query_p50_ms": round(1000 * statistics.median(single[name]), 3),
        }
        for name in embedders
    }


def shared_embeddings(name: str, dataset: Any) -> tuple[np.ndarray, np.ndarray] | None:
    folder = SHARED / "embeddings" / name
    if not folder.is_dir():
        return None
    if json.loads((folder / "corpus_ids.json").read_text()) != dataset.corpus_ids:
        return None
    if json.loads((folder / "query_ids.json").read_text()) != dataset.query_ids:
        return None
    return (
        np.load(folder / "corpus.f16.npy").astype(np.float32),
        np.load(folder / "queries.f16.npy").astype(np.float32),
    )


def quality(
    backend: str, datasets: list[str], cache: EmbeddingCache, shared_torch: bool
) -> dict[str, dict[str, float]]:
    """NDCG@10 of exact float32 search and of the default pipeline, per collection."""
    out: dict[str, dict[str, float]] = {"ndcg10": {}, "ndcg10_pipeline": {}}
    emb = Embedder(backend=backend)
    for name in datasets:
        dataset = load_beir(SHARED / "datasets" / name)
        vectors = shared_embeddings(name, dataset) if backend == "torch" and shared_torch else None
        if vectors is None:
            t0 = time.perf_counter()
            docs, _ = cache.embed(emb, dataset.corpus_texts)
            queries, _ = cache.embed(emb, dataset.query_texts)
            print(f"  {backend} {name}: embeddings in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        else:
            docs, queries = vectors
        report = run_eval(dataset, docs, queries, ["float32", PIPELINE], split="test", batch_repeats=1)
        by_config = {row["config"]: row for row in report.rows}
        out["ndcg10"][name] = round(by_config["float32"]["ndcg@10"], 4)
        out["ndcg10_pipeline"][name] = round(by_config[PIPELINE]["ndcg@10"], 4)
        print(
            f"  {backend} {name}: NDCG@10 float32 {out['ndcg10'][name]:.4f}, "
            f"{PIPELINE} {out['ndcg10_pipeline'][name]:.4f}",
            file=sys.stderr,
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=list(ALL_BACKENDS), choices=ALL_BACKENDS)
    parser.add_argument("--quality-backends", nargs="*", default=None, help="default: --backends")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--n-long", type=int, default=256, help="scifact abstracts timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true", help="quality only")
    parser.add_argument("--shared-torch", action="store_true", help="torch quality from ../shared/embeddings")
    parser.add_argument("--cache-dir", default=None, help="embedding cache of the full collections")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if "torch" not in args.backends:
        args.backends.insert(0, "torch")

    scifact = load_beir(SHARED / "datasets" / "scifact")
    long = scifact.corpus_texts[: args.n_long]
    short = scifact.query_texts
    rows: dict[str, dict[str, Any]] = {b: {"backend": b} for b in args.backends}
    if not args.no_speed:
        print(f"speed: {len(long)} abstracts, {len(short)} queries, {args.rounds} rounds", file=sys.stderr)
        embedders = {b: Embedder(backend=b) for b in args.backends}
        for name, figures in speed(embedders, long, short, args.rounds).items():
            rows[name].update(figures)
    cache = EmbeddingCache(args.cache_dir)
    for backend in args.quality_backends if args.quality_backends is not None else args.backends:
        rows.setdefault(backend, {"backend": backend}).update(
            quality(backend, args.datasets, cache, args.shared_torch)
        )
    base = rows.get("torch", {})
    for row in rows.values():
        for key in ("docs_per_s_long", "docs_per_s_short"):
            if key in row and key in base:
                row[f"{key}_vs_torch"] = round(row[key] / base[key], 2)
        for key in ("ndcg10", "ndcg10_pipeline"):
            if key in row and key in base:
                row[f"{key}_loss_points"] = {
                    d: round(100 * (base[key][d] - v), 2) for d, v in row[key].items() if d in base[key]
                }
    print(
        f"{'backend':<14} {'long/s':>8} {'x':>5} {'short/s':>8} {'x':>5} {'p50 ms':>7}  "
        "NDCG@10 float32 | pipeline"
    )
    for row in rows.values():
        ndcg = " ".join(f"{d[:4]} {v:.4f}" for d, v in row.get("ndcg10", {}).items())
        pipe = " ".join(f"{v:.4f}" for v in row.get("ndcg10_pipeline", {}).values())
        print(
            f"{row['backend']:<14} {row.get('docs_per_s_long', float('nan')):8.1f} "
            f"{row.get('docs_per_s_long_vs_torch', float('nan')):5.2f} "
            f"{row.get('docs_per_s_short', float('nan')):8.1f} "
            f"{row.get('docs_per_s_short_vs_torch', float('nan')):5.2f} "
            f"{row.get('query_p50_ms', float('nan')):7.2f}  {ndcg} | {pipe}"
        )
    if args.json:
        meta = {
            "cpu_count": os.cpu_count(),
            "n_long": len(long),
            "n_short": len(short),
            "rounds": args.rounds,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": list(rows.values())}, indent=1) + "\n")


if __name__ == "__main__":
    main()
