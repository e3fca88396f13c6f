"""Trained 1-bit codes (issue 17): fine-tune MiniLM per collection, measure on the test queries.

For every collection: the base model's float32, sign-bit (Hamming) and ``rabitq-itq`` NDCG@10, then
``quantsearch.finetune`` on the collection's training pairs (train qrels, else inverse cloze pairs;
never the test split), NDCG@10 of the trained model's sign bits and float32 at checkpoints (the
curve), and the final rows through ``run_eval`` (the same code as ``quantsearch eval``).

Run it under the shared lock, one collection at a time (training is CPU-heavy)::

    flock /tmp/bench.lock .venv/bin/python benchmarks/trained_binary.py --datasets cisi \
        --models /work/scratch/trained-binary/models --out docs/eval/trained

``--out`` gets ``<name>.json`` per collection; ``--plot`` redraws ``ndcg_vs_steps.png`` from them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch.datasets import load_beir
from quantsearch.embed import Embedder, EmbeddingCache
from quantsearch.evaluation.harness import run_eval
from quantsearch.evaluation.metrics import ndcg_at_k
from quantsearch.finetune import FinetuneConfig, finetune, training_pairs

ROWS = ["float32", "binary", "rabitq-itq"]


def _run(dataset: Any, scores: np.ndarray, k: int = 10) -> dict[str, dict[str, float]]:
    """Top-k run from a (nq, n) score matrix; ties by smaller row (stable sort)."""
    run: dict[str, dict[str, float]] = {}
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    for qi, qid in enumerate(dataset.query_ids):
        run[qid] = {dataset.corpus_ids[r]: float(k - rank) for rank, r in enumerate(top[qi])}
    return run


def quick_ndcg(dataset: Any, docs: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """NDCG@10 of float32 dot products and of sign-bit Hamming similarity (exact brute force)."""
    sd = np.where(docs > 0, 1.0, -1.0).astype(np.float32)
    sq = np.where(queries > 0, 1.0, -1.0).astype(np.float32)
    return {
        "float32": ndcg_at_k(_run(dataset, queries @ docs.T), dataset.qrels).mean,
        "binary": ndcg_at_k(_run(dataset, sq @ sd.T), dataset.qrels).mean,
    }


def shared_embeddings(dataset: Any, folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The base model's precomputed embeddings (../shared/embeddings/<name>) in the dataset's order."""
    folder = Path(folder)
    corpus = np.load(folder / "corpus.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.f16.npy").astype(np.float32)
    crow = {d: i for i, d in enumerate(json.loads((folder / "corpus_ids.json").read_text()))}
    qrow = {q: i for i, q in enumerate(json.loads((folder / "query_ids.json").read_text()))}
    docs = corpus[[crow[d] for d in dataset.corpus_ids]]
    qs = queries[[qrow[q] for q in dataset.query_ids]]
    return np.ascontiguousarray(docs), np.ascontiguousarray(qs)


def encode(model: Any, texts: list[str]) -> np.ndarray:
    out = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def measure(dataset: Any, docs: np.ndarray, queries: np.ndarray, model: str) -> dict[str, float]:
    report = run_eval(dataset, docs, queries, ROWS, model=model)
    return {r["config"]: round(float(r["ndcg@10"]), 4) for r in report.rows}


def one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root) / name
    dataset = load_beir(root, "test")
    cache = EmbeddingCache(args.cache_dir)
    base = Embedder()
    docs, _ = cache.embed(base, dataset.corpus_texts)
    queries, _ = cache.embed(base, dataset.query_texts)
    result: dict[str, Any] = {"dataset": name, "base": measure(dataset, docs, queries, base.name)}
    print(f"{name}: base {result['base']}", file=sys.stderr)
    pairs = training_pairs(root, seed=args.seed)
    config = FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        beta_start=args.beta_start,
        beta_end=args.beta_end,
        float_weight=args.float_weight,
        distill_weight=args.distill_weight,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        threads=args.threads,
    )
    every = args.checkpoint_every
    marks = list(range(every, args.steps + 1, every)) if every else []

    def on_checkpoint(step: int, model: Any) -> dict[str, Any]:
        t = time.perf_counter()
        figures = quick_ndcg(dataset, encode(model, dataset.corpus_texts), encode(model, dataset.query_texts))
        print(f"  step {step}: {figures} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        return {k: round(v, 4) for k, v in figures.items()}

    out = Path(args.models) / f"{name}-{args.tag}"
    t0 = time.perf_counter()
    trained = finetune(
        pairs, out, config=config, checkpoints=marks, on_checkpoint=on_checkpoint if marks else None
    )
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    result["train_seconds"] = trained.report["train_seconds"]
    result["pairs"] = trained.report["pairs"]
    result["config"] = trained.report["config"]
    result["curve"] = trained.report["checkpoints"]
    result["loss"] = trained.report["loss"]
    result["model_dir"] = str(out)
    tuned = Embedder(str(out))
    tdocs = tuned.embed(dataset.corpus_texts)
    tqueries = tuned.embed(dataset.query_texts)
    result["trained"] = measure(dataset, tdocs, tqueries, str(out))
    b, t = result["base"], result["trained"]
    result["summary"] = {
        "trained_1bit_vs_base_float32": round(t["binary"] / b["float32"], 4),
        "trained_1bit_vs_base_rabitq_itq": round(t["binary"] / b["rabitq-itq"], 4),
    }
    print(f"{name}: trained {t} summary {result['summary']}", file=sys.stderr)
    return result


def plot(out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        curve = [{"step": 0, **_base_point(r)}] + [c for c in r["curve"] if c["step"] > 0]
        steps = [c["step"] for c in curve]
        ax.plot(steps, [c["binary"] for c in curve], "o-", label="trained, 1-bit (sign, Hamming)")
        ax.plot(steps, [c["float32"] for c in curve], "s--", label="trained, float32")
        ax.axhline(r["base"]["float32"], color="k", lw=0.8, label="base float32")
        ax.axhline(r["base"]["rabitq-itq"], color="g", ls=":", label="base rabitq-itq")
        ax.axhline(r["base"]["binary"], color="r", ls=":", label="base 1-bit")
        ax.set_title(f"{r['dataset']} ({r['pairs']['source']})")
        ax.set_xlabel("training steps")
        ax.set_ylabel("NDCG@10 (test queries)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "ndcg_vs_steps.png"
    fig.savefig(path, dpi=110)
    return path


def _base_point(r: dict[str, Any]) -> dict[str, float]:
    return {"float32": r["base"]["float32"], "binary": r["base"]["binary"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["cisi", "cranfield", "scifact", "nfcorpus"])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
    p.add_argument("--models", default="/work/scratch/trained-binary/models")
    p.add_argument("--cache-dir", default="/work/scratch/trained-binary/cache")
    p.add_argument("--out", default=None, help="write <dataset>.json here")
    p.add_argument("--plot", action="store_true", help="only redraw the plot from --out")
    p.add_argument("--tag", default="run")
    p.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    p.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size)
    p.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    p.add_argument("--temperature", type=float, default=FinetuneConfig.temperature)
    p.add_argument("--beta-start", type=float, default=FinetuneConfig.beta_start)
    p.add_argument("--beta-end", type=float, default=FinetuneConfig.beta_end)
    p.add_argument("--float-weight", type=float, default=FinetuneConfig.float_weight)
    p.add_argument("--distill-weight", type=float, default=FinetuneConfig.distill_weight)
    p.add_argument("--max-seq-length", type=int, default=FinetuneConfig.max_seq_length)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.plot:
        print(plot(Path(args.out)))
        return 0
    Path(args.models).mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        result = one(name, args)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
