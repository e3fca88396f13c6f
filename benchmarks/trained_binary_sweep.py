"""Compare code-head recipes on one collection by VALIDATION NDCG@10 only (issue 17).

Each recipe (a JSON object of :class:`quantsearch.finetune.HeadConfig` fields) is trained on the
collection's training pairs (train qrels, else inverse cloze pairs) over the base model's shared
embeddings; one JSON line per recipe gives the validation NDCG@10 of the epoch kept (held-out
training queries, the same split for every recipe with the same seed and ``val_fraction``) and,
for the record only, the test NDCG@10 of its sign bits and float32. Choose by ``val``, never by
``test_bin``; then run benchmarks/trained_binary.py with the chosen recipe's flags::

    flock /tmp/bench.lock .venv/bin/python benchmarks/trained_binary_sweep.py cranfield \\
        '[{"epochs": 15, "val_fraction": 0.2, "lr": 3e-4, "surrogate": "ste"}]'
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from trained_binary import quick_ndcg, shared_embeddings

from quantsearch.datasets import load_beir
from quantsearch.embed import Embedder, EmbeddingCache
from quantsearch.finetune import HeadConfig, head_positives, train_code_head, training_pairs

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    name, recipes = sys.argv[1], json.loads(sys.argv[2])
    root = SHARED / "datasets" / name
    dataset = load_beir(root, "test")
    docs, queries = shared_embeddings(dataset, SHARED / "embeddings" / name)
    pairs = training_pairs(root, seed=0)
    cache = EmbeddingCache("/work/scratch/trained-binary/cache")
    train_queries, _ = cache.embed(Embedder(), pairs.query_texts)
    for recipe in recipes:
        t0 = time.perf_counter()
        head = train_code_head(docs, train_queries, head_positives(pairs), HeadConfig(**recipe))
        report = head.report
        test = quick_ndcg(dataset, head.apply(docs), head.apply(queries))
        row = {
            "ds": name,
            "cfg": recipe,
            "kept": report["kept_epoch"],
            "val0": report["val_ndcg@10_itq_start"],
            "val": report["val_ndcg@10_kept"],
            "vals": [e["val_ndcg@10"] for e in report["epochs"]],
            "test_bin": round(test["binary"], 4),
            "test_f32": round(test["float32"], 4),
            "s": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
