"""End-to-end fine-tuning after the code head (issue 17): 1-bit NDCG@10 of head-only vs head + encoder.

Starts from the saved head-only model of trained_binary.py (``--head-model``: the base MiniLM with
the trained code head), fine-tunes the top ``--unfreeze-layers`` transformer layers and the head
end to end on the same training pairs (in-batch contrastive loss over the Hamming surrogate plus
distillation of the start model's in-batch ranking), then embeds the corpus and the test queries with
both models and reports NDCG@10 of their sign bits (Hamming, no rescoring) and float32::

    nice -n 19 .venv/bin/python benchmarks/trained_binary_e2e.py cisi \\
        --head-model /work/scratch/trained-binary/models/cisi-cloze --steps 200 --unfreeze-layers 1

Training time printed here is from an unlocked run on a shared machine: quality, not speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from trained_binary import quick_ndcg, shared_embeddings

from quantsearch.datasets import load_beir
from quantsearch.embed import Embedder, EmbeddingCache
from quantsearch.finetune import CodeHead, FinetuneConfig, TrainingPairs, finetune, training_pairs

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--head-model", required=True, help="head-only model folder (trained_binary.py)")
    p.add_argument("--out", default=None, help="model folder to write (default: <head-model>-e2e)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--unfreeze-layers", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-pairs", type=int, default=None, help="train on a seeded subset of the pairs")
    p.add_argument("--distill-weight", type=float, default=1.0)
    p.add_argument("--cache-dir", default="/work/scratch/trained-binary/cache")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    root = SHARED / "datasets" / args.dataset
    dataset = load_beir(root, "test")
    pairs = training_pairs(root)
    if args.max_pairs is not None and args.max_pairs < len(pairs):
        keep = np.sort(np.random.default_rng(0).permutation(len(pairs))[: args.max_pairs])
        queries = [pairs.query_texts[i] for i in keep]
        if pairs.source == "inverse-cloze":  # one document per pair: keep those of the subset
            docs = [pairs.doc_texts[i] for i in keep]
            positives = [np.array([j], np.int64) for j in range(keep.size)]
            pairs = TrainingPairs(queries, docs, positives, pairs.doc_groups[keep], pairs.source)
        else:  # qrels: the documents are the corpus
            positives = [pairs.positives[i] for i in keep]
            pairs = TrainingPairs(queries, pairs.doc_texts, positives, pairs.doc_groups, pairs.source)
    out = Path(args.out or f"{args.head_model.rstrip('/')}-e2e")
    if out.exists():
        shutil.rmtree(out)
    config = FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_seq_length=args.max_seq_length,
        unfreeze_layers=args.unfreeze_layers,
        distill_weight=args.distill_weight,
        threads=2,
    )
    t0 = time.perf_counter()
    result = finetune(pairs, out, model=args.head_model, config=config)
    seconds = time.perf_counter() - t0
    cache = EmbeddingCache(args.cache_dir)
    # head-only: its head applied to the base model's shared embeddings (what that model computes,
    # tests/test_finetune.py); head + e2e: the fine-tuned model encodes the corpus and the queries
    dense = Embedder(args.head_model).model[-1].linear
    head = CodeHead(dense.weight.detach().numpy(), dense.bias.detach().numpy())
    base_docs, base_queries = shared_embeddings(dataset, SHARED / "embeddings" / args.dataset)
    figures = {"head-only": quick_ndcg(dataset, head.apply(base_docs), head.apply(base_queries))}
    embedder = Embedder(str(out))
    docs, _ = cache.embed(embedder, list(dataset.corpus_texts))
    queries, _ = cache.embed(embedder, list(dataset.query_texts))
    figures["head+e2e"] = quick_ndcg(dataset, docs, queries)
    figures = {label: {k: round(v, 4) for k, v in f.items()} for label, f in figures.items()}
    print(f"{args.dataset}: {figures}", file=sys.stderr, flush=True)
    report = {
        "dataset": args.dataset,
        "pairs": {"source": pairs.source, "queries": len(pairs)},
        "config": result.report["config"],
        "loss": result.report["loss"],
        "setup_seconds": result.report.get("setup_seconds"),
        "train_seconds": result.report["train_seconds"],
        "total_seconds_unlocked": round(seconds, 1),
        "test_ndcg@10": figures,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
