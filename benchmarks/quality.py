"""Quality of binary -> int8 rescoring against float32 exact search on real BEIR collections.

For each dataset: NDCG@10 of float32 exact search (brute force), of the Hamming ranking alone, and
of binary -> int8 (and -> float16) rescoring at several oversampling factors, with retention
(fraction of float32 NDCG@10) and search time per query (batched).

    python benchmarks/quality.py                      # shared precomputed all-MiniLM-L6-v2 embeddings
    python benchmarks/quality.py --embed              # re-embed corpus and queries with our Embedder
    python benchmarks/quality.py --datasets nfcorpus scifact --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from quantsearch import Index, ScalarQuantizer
from quantsearch.datasets import load_beir
from quantsearch.evaluation import evaluate, run_from_results

SHARED = Path(__file__).resolve().parents[2] / "shared"


def load_embeddings(name: str, embed: bool) -> tuple[object, np.ndarray, np.ndarray]:
    data = load_beir(SHARED / "datasets" / name)
    if embed:
        from quantsearch.embed import Embedder

        embedder = Embedder()
        t0 = time.perf_counter()
        docs = embedder.embed(data.corpus_texts, progress=True)
        queries = embedder.embed(data.query_texts)
        print(f"  embedded {len(docs)} docs + {len(queries)} queries in {time.perf_counter() - t0:.0f} s")
        return data, docs, queries
    folder = SHARED / "embeddings" / name
    assert json.loads((folder / "corpus_ids.json").read_text()) == data.corpus_ids
    assert json.loads((folder / "query_ids.json").read_text()) == data.query_ids
    docs = np.load(folder / "corpus.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.f16.npy").astype(np.float32)
    return data, docs, queries


def measure(name: str, embed: bool, oversampling: list[float]) -> list[dict[str, object]]:
    data, docs, queries = load_embeddings(name, embed)
    rows: list[dict[str, object]] = []

    def record(config: str, ids: np.ndarray, scores: np.ndarray, seconds: float) -> None:
        metrics = evaluate(run_from_results(data.query_ids, ids, scores), data.qrels, ks=(10, 100))
        rows.append(
            {"dataset": name, "config": config, **metrics, "ms_per_query": seconds * 1e3 / len(queries)}
        )

    t0 = time.perf_counter()
    sims = queries @ docs.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :100]
    record(
        "float32 exact",
        np.asarray(data.corpus_ids)[top],
        np.take_along_axis(sims, top, 1),
        time.perf_counter() - t0,
    )

    with tempfile.TemporaryDirectory() as tmp:
        index = Index.build(Path(tmp) / "index", docs, ids=data.corpus_ids, rescore=["int8", "float16"])
        with index:
            for config, kwargs in (
                [("binary (Hamming only)", {"stages": ()})]
                + [
                    (f"binary x{os:g} -> int8", {"oversampling": os, "stages": ("int8",)})
                    for os in oversampling
                ]
                + [(f"binary x{os:g} -> int8 -> float16", {"oversampling": os}) for os in (10.0,)]
            ):
                t0 = time.perf_counter()
                res = index.search(
                    queries, k=100 if not kwargs.get("stages", True) else 10, with_payload=False, **kwargs
                )
                record(config, res.ids, res.scores, time.perf_counter() - t0)
        # the int8 calibration choice: min/max ranges vs percentile clipping, at x10 and exhaustive
        for label, percentile in [("min/max", None), ("p99.5", 99.5), ("p99.9", 99.9)]:
            quantizer = ScalarQuantizer("int8", percentile=percentile)
            with Index.build(
                Path(tmp) / f"int8-{label}", docs, ids=data.corpus_ids, rescore=[quantizer]
            ) as index:
                for os, tag in [(10.0, "x10"), (len(docs) / 10, "all")]:
                    t0 = time.perf_counter()
                    res = index.search(queries, k=10, oversampling=os, with_payload=False)
                    record(f"binary {tag} -> int8 [{label}]", res.ids, res.scores, time.perf_counter() - t0)
    base = rows[0]["ndcg@10"]
    for row in rows:
        row["retention"] = row["ndcg@10"] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "scifact", "cranfield", "cisi"])
    parser.add_argument("--embed", action="store_true", help="re-embed with quantsearch.embed.Embedder")
    parser.add_argument("--oversampling", nargs="+", type=float, default=[1, 2, 4, 10, 20])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    source = "re-embedded with quantsearch.Embedder" if args.embed else "shared precomputed embeddings"
    print(f"all-MiniLM-L6-v2, {source}")
    everything = []
    for name in args.datasets:
        rows = measure(name, args.embed, args.oversampling)
        everything += rows
        print(f"\n{name}")
        print(f"  {'config':<34} {'NDCG@10':>8} {'retention':>9} {'R@100':>7} {'ms/query':>9}")
        for row in rows:
            r100 = (
                f"{row['recall@100']:.4f}"
                if "Hamming" in str(row["config"]) or "exact" in str(row["config"])
                else "   -"
            )
            print(
                f"  {row['config']:<34} {row['ndcg@10']:>8.4f} {row['retention']:>8.2%} {r100:>7} "
                f"{row['ms_per_query']:>9.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
