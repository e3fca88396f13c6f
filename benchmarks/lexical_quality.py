"""Quality only: the NDCG@10 rows of benchmarks/lexical.py computed straight from the library (no
timing loops, a couple of minutes for all four collections). One JSON line per collection; tuned
fusion weights come from nfcorpus dev and scifact train (embedded once with the bundled model, cached).

    python benchmarks/lexical_quality.py --datasets cisi cranfield nfcorpus scifact [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch import Index
from quantsearch.datasets import BeirDataset, load_beir
from quantsearch.evaluation.lexical_configs import _Bm25sPeer, _RankBm25Peer
from quantsearch.evaluation.metrics import evaluate
from quantsearch.evaluation.tuning import tune_fusion
from quantsearch.fusion import Fusion

sys.path.insert(0, str(Path(__file__).parent))
from lexical import GRID, TUNING_SPLIT  # noqa: E402
from quality import SHARED, load_shared  # noqa: E402


def ndcg(data: BeirDataset, rows: np.ndarray) -> float:
    """NDCG@10 of a ranking of rows (nq, 10), -1 / None padding."""
    run = {
        q: {data.corpus_ids[int(r)]: float(10 - i) for i, r in enumerate(ranked) if r is not None and r >= 0}
        for q, ranked in zip(data.query_ids, rows.tolist(), strict=True)
    }
    return evaluate(run, data.qrels, ks=(10,))["ndcg@10"]


def tuned_weights(name: str, docs: np.ndarray, data: BeirDataset, tmp: str) -> dict[str, Any]:
    """Per method, the dense weight tuned on the collection's dev/train split (none: {})."""
    if name not in TUNING_SPLIT:
        return {}
    from quantsearch.embed import Embedder, EmbeddingCache

    dev = load_beir(SHARED / "datasets" / name, TUNING_SPLIT[name])
    vectors, _ = EmbeddingCache().embed(Embedder(), dev.query_texts)
    out: dict[str, Any] = {}
    with Index.build(
        f"{tmp}/tune", docs, ids=data.corpus_ids, texts=data.corpus_texts, lexical=True
    ) as index:
        for method in ("rrf", "convex"):
            best, curve = tune_fusion(
                index, vectors, dev.query_texts, dev.query_ids, dev.qrels, method=method, weights=GRID
            )
            out[method] = {"weight": best.weight, "dev_ndcg@10": curve}
    return out


def collection(name: str) -> dict[str, Any]:
    data, docs, queries = load_shared(name)
    texts, n = data.query_texts, len(docs)
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lexical-quality-") as tmp:
        tuned = tuned_weights(name, docs, data, tmp)
        int8 = Index.build(f"{tmp}/int8", docs, texts=data.corpus_texts, lexical=True)
        f32 = Index.build(f"{tmp}/f32", docs, texts=data.corpus_texts, lexical=True, rescore=["float32"])
        exact = {"oversampling": n, "with_payload": False}  # every document a float32 candidate
        rows["float32"] = ndcg(data, f32.search(queries, k=10, **exact).ids)
        rows["binary>int8@10"] = ndcg(data, int8.search(queries, k=10, with_payload=False).ids)
        rows["bm25"] = ndcg(data, int8.search(texts, k=10, mode="lexical", with_payload=False).ids)
        rows["bm25s"] = ndcg(data, _Bm25sPeer(data.corpus_texts).search_texts(queries, texts, 10))
        rows["rank-bm25"] = ndcg(data, _RankBm25Peer(data.corpus_texts).search_texts(queries, texts, 10))
        for method in ("rrf", "convex"):
            weights = [0.5] + ([tuned[method]["weight"]] if method in tuned else [])
            for w in dict.fromkeys(weights):
                tag = f"hybrid-{method}" + ("" if w == 0.5 else f"@{w:g}")
                hybrid = {"mode": "hybrid", "fusion": Fusion(method, w), "query_texts": texts}
                rows[tag] = ndcg(data, int8.search(queries, k=10, with_payload=False, **hybrid).ids)
                rows[tag + ":float32"] = ndcg(data, f32.search(queries, k=10, **exact, **hybrid).ids)
        rows["svm"] = ndcg(data, int8.search(queries, k=10, mode="svm", with_payload=False).ids)
        rows["svm:float32"] = ndcg(data, f32.search(queries, k=10, mode="svm", **exact).ids)
        int8.close()
        f32.close()
    return {"ndcg@10": rows, "tuning": tuned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "scifact", "cranfield", "cisi"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = {}
    for name in args.datasets:
        out[name] = collection(name)
        weights = {m: v["weight"] for m, v in out[name]["tuning"].items()}
        print(
            name, json.dumps({k: round(v, 4) for k, v in out[name]["ndcg@10"].items()}), weights, flush=True
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
