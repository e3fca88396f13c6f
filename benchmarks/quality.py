"""Quality of the rescoring pipeline and of its calibration choices, on the shared precomputed embeddings.

`quantsearch eval` is the user-facing report (it embeds with our Embedder, caches, measures peers and
latency). This script reruns the same harness on ../shared/embeddings (no model needed) with the rows
behind the defaults: oversampling 1..20, a float16 third stage, and the int8 calibration choice
(min/max ranges vs 99.5 / 99.9 percentiles) at x10 and with every document a candidate.

    python benchmarks/quality.py
    python benchmarks/quality.py --datasets nfcorpus scifact --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from quantsearch.datasets import load_beir
from quantsearch.evaluation import IndexConfig, run_eval
from quantsearch.quantization import ScalarQuantizer

SHARED = Path(__file__).resolve().parents[2] / "shared"


def load_shared(name: str):
    data = load_beir(SHARED / "datasets" / name)
    folder = SHARED / "embeddings" / name
    if json.loads((folder / "corpus_ids.json").read_text()) != data.corpus_ids:
        raise SystemExit(f"{folder}: corpus ids differ from the dataset's")
    if json.loads((folder / "query_ids.json").read_text()) != data.query_ids:
        raise SystemExit(f"{folder}: query ids differ from the dataset's")
    docs = np.load(folder / "corpus.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.f16.npy").astype(np.float32)
    return data, docs, queries


def configs(n_docs: int, oversampling: list[float]) -> list:
    rows: list = ["float32", "binary"]
    rows += [f"binary>int8@{os:g}" for os in oversampling]
    rows += ["binary>int8>float16@10"]
    for label, percentile in [("min/max", None), ("p99.5", 99.5), ("p99.9", 99.9)]:
        for os, tag in [(10.0, "x10"), (n_docs / 10, "all")]:
            rows.append(
                IndexConfig(
                    f"binary {tag} -> int8 [{label}]",
                    rescore=(ScalarQuantizer("int8", percentile=percentile),),
                    oversampling=os,
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "scifact", "cranfield", "cisi"])
    parser.add_argument("--oversampling", nargs="+", type=float, default=[1, 2, 4, 10, 20])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print("all-MiniLM-L6-v2, shared precomputed embeddings")
    everything = []
    for name in args.datasets:
        data, docs, queries = load_shared(name)
        report = run_eval(data, docs, queries, configs(len(docs), args.oversampling), batch_repeats=1)
        print(f"\n{name}")
        print(f"  {'config':<34} {'NDCG@10':>8} {'retention':>9} {'R@100':>7}")
        for row in report.rows:
            everything.append({"dataset": name, **row})
            ndcg, retention, recall = row["ndcg@10"], row["retention"], row["recall@100"]
            print(f"  {row['config']:<34} {ndcg:>8.4f} {retention:>8.2%} {recall:>7.4f}")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
