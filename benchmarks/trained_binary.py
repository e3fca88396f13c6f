"""Trained 1-bit codes (issue 17): a code head per collection, measured on the test queries.

For every collection: the base model's float32, sign-bit (Hamming), ``sign-asym`` (float query x
sign bits) and ``rabitq-itq`` NDCG@10; then the code head trained on the collection's training pairs
(train qrels, else inverse cloze pairs; never the test split) on the base model's frozen
embeddings, NDCG@10 of its sign bits and float32 on the test queries after every epoch (the curve;
the epoch kept is chosen on held-out training queries, never on test), and the final rows through
``run_eval`` (the code behind ``quantsearch eval``). Base embeddings come from ../shared/embeddings;
the trained model's are the head applied to them, which is what the saved model computes
(tests/test_finetune.py checks that).

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
from quantsearch.finetune import (
    CodeHead,
    HeadConfig,
    head_positives,
    save_with_head,
    train_code_head,
    training_pairs,
)

ROWS = ["float32", "binary", "sign-asym", "rabitq-itq"]


def _run(dataset: Any, scores: np.ndarray, k: int = 10) -> dict[str, dict[str, float]]:
    """Top-k run from a (nq, n) score matrix; ties by smaller row (stable sort)."""
    run: dict[str, dict[str, float]] = {}
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    for qi, qid in enumerate(dataset.query_ids):
        run[qid] = {dataset.corpus_ids[r]: float(k - rank) for rank, r in enumerate(top[qi])}
    return run


def quick_ndcg(dataset: Any, docs: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """NDCG@10 of float32 dot products, of sign-bit Hamming similarity and of the float query against
    the documents' sign bits (``sign-asym``), by exact brute force."""
    sd = np.where(docs > 0, 1.0, -1.0).astype(np.float32)
    sq = np.where(queries > 0, 1.0, -1.0).astype(np.float32)
    return {
        "float32": ndcg_at_k(_run(dataset, queries @ docs.T), dataset.qrels).mean,
        "binary": ndcg_at_k(_run(dataset, sq @ sd.T), dataset.qrels).mean,
        "sign_asym": ndcg_at_k(_run(dataset, queries @ sd.T), dataset.qrels).mean,
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


def measure(dataset: Any, docs: np.ndarray, queries: np.ndarray, model: str) -> dict[str, float]:
    """NDCG@10 of the rows through ``run_eval`` (real indexes, as ``quantsearch eval``)."""
    report = run_eval(dataset, docs, queries, ROWS, model=model, batch_repeats=1)
    return {r["config"]: round(float(r["ndcg@10"]), 4) for r in report.rows}


def one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root) / name
    dataset = load_beir(root, "test")
    docs, queries = shared_embeddings(dataset, Path(args.embeddings) / name)
    result: dict[str, Any] = {"dataset": name, "base": measure(dataset, docs, queries, "base")}
    print(f"{name}: base {result['base']}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    pairs = training_pairs(root, seed=args.seed)
    train_queries, _ = EmbeddingCache(args.cache_dir).embed(Embedder(), pairs.query_texts)
    embed_s = time.perf_counter() - t0
    # the library's recipe for the pairs found (train qrels or corpus-only), with the flags given on top
    fields = ("epochs", "lr", "temperature", "beta_start", "beta_end", "distill_weight", "val_fraction")
    fields += ("bits", "surrogate", "ema")
    overrides = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
    if args.asymmetric:
        overrides["asymmetric"] = True
    config = HeadConfig.for_pairs(pairs.source, seed=args.seed, **overrides)

    def on_epoch(epoch: int, weight: np.ndarray, bias: np.ndarray) -> dict[str, Any]:
        head = CodeHead(weight, bias)
        figures = quick_ndcg(dataset, head.apply(docs), head.apply(queries))
        return {f"test_{k}": round(v, 4) for k, v in figures.items()}

    head = train_code_head(docs, train_queries, head_positives(pairs), config, on_epoch=on_epoch)
    result["pairs"] = {"source": pairs.source, "queries": len(pairs)}
    result["train_seconds"] = {"embed_train_queries": round(embed_s, 1), "head": head.report["seconds"]}
    result["head"] = {k: v for k, v in head.report.items() if k != "epochs"}
    result["curve"] = head.report["epochs"]
    result["trained"] = measure(dataset, head.apply(docs), head.apply(queries), "trained")
    out = Path(args.models) / f"{name}-{args.tag}"
    if not out.exists():
        save_with_head(head, out, report={"pairs": result["pairs"]})
    result["model_dir"] = str(out)
    b, t = result["base"], result["trained"]
    result["bytes_per_vector"] = {
        "base_1bit": docs.shape[1] // 8,
        "trained_1bit": -(-head.weight.shape[0] // 8),
    }
    result["summary"] = {
        "trained_1bit_vs_base_float32": round(t["binary"] / b["float32"], 4),
        "trained_1bit_vs_base_rabitq_itq": round(t["binary"] / b["rabitq-itq"], 4),
        "trained_1bit_vs_base_1bit": round(t["binary"] / b["binary"], 4),
        "trained_sign_asym_vs_base_float32": round(t["sign-asym"] / b["float32"], 4),
        "trained_sign_asym_vs_base_rabitq_itq": round(t["sign-asym"] / b["rabitq-itq"], 4),
    }
    print(f"{name}: trained {t} summary {result['summary']}", file=sys.stderr, flush=True)
    return result


def plot(out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        curve = r["curve"]
        steps = [c["epoch"] for c in curve]
        ax.plot(steps, [c["test_binary"] for c in curve], "o-", ms=3, label="trained, 1-bit (sign, Hamming)")
        ax.plot(steps, [c["test_float32"] for c in curve], "s--", ms=3, label="trained, float32")
        if "test_sign_asym" in curve[0]:
            ax.plot(
                steps,
                [c["test_sign_asym"] for c in curve],
                "^-.",
                ms=3,
                color="tab:purple",
                label="trained, float query x 1-bit",
            )
        ax.axvline(r["head"]["kept_epoch"], color="0.6", lw=0.8, ls="--", label="epoch kept (validation)")
        ax.axhline(r["base"]["float32"], color="k", lw=0.8, label="base float32")
        ax.axhline(r["base"]["rabitq-itq"], color="g", ls=":", label="base rabitq-itq")
        ax.axhline(r["base"]["binary"], color="r", ls=":", label="base 1-bit")
        ax.set_title(f"{r['dataset']} ({r['pairs']['source']})")
        ax.set_xlabel("epochs (0: ITQ start)")
        ax.set_ylabel("NDCG@10 (test queries)")
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path = out_dir / "ndcg_vs_steps.png"
    fig.savefig(path, dpi=110)
    return path


def table(out_dir: Path) -> str:
    """The docs/benchmarks.md table from the ``<name>.json`` files in ``out_dir``."""
    head = (
        "| collection | pairs | base float32 | base 1-bit | base rabitq-itq | trained 1-bit | trained 1-bit "
        "/ base float32 | trained float q x 1-bit | trained float32 | B/vec (1-bit) | train min |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    lines = [head]
    for path in sorted(out_dir.glob("*.json")):
        r = json.loads(path.read_text())
        b, t = r["base"], r["trained"]
        minutes = (r["train_seconds"]["embed_train_queries"] + r["train_seconds"]["head"]) / 60
        nbytes = r.get("bytes_per_vector", {}).get("trained_1bit", 48)
        lines.append(
            f"| {r['dataset']} | {r['pairs']['source']} ({r['pairs']['queries']:,} q) | {b['float32']:.4f} "
            f"| {b['binary']:.4f} | {b['rabitq-itq']:.4f} | **{t['binary']:.4f}** "
            f"| {t['binary'] / b['float32']:.1%} | {t['sign-asym']:.4f} | {t['float32']:.4f} | {nbytes} "
            f"| {minutes:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["cisi", "cranfield", "scifact", "nfcorpus"])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
    p.add_argument("--models", default="/work/scratch/trained-binary/models")
    p.add_argument("--cache-dir", default="/work/scratch/trained-binary/cache")
    p.add_argument("--out", default=None, help="write <dataset>.json here")
    p.add_argument("--plot", action="store_true", help="only redraw the plot from --out")
    p.add_argument("--table", action="store_true", help="only print the markdown table from --out")
    p.add_argument(
        "--embeddings", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "embeddings")
    )
    p.add_argument("--tag", default="head")
    # recipe flags: default None, i.e. the library's recipe for the collection's pairs
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--beta-start", type=float, default=None)
    p.add_argument("--beta-end", type=float, default=None)
    p.add_argument("--distill-weight", type=float, default=None)
    p.add_argument("--val-fraction", type=float, default=None)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--bits", type=int, default=None, help="code length (default: the dimension)")
    p.add_argument("--surrogate", choices=["tanh", "ste"], default=None)
    p.add_argument("--asymmetric", action="store_true", help="train for float query x document codes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.plot:
        print(plot(Path(args.out)))
        return 0
    if args.table:
        print(table(Path(args.out)))
        return 0
    Path(args.models).mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        result = one(name, args)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.out:
        print(plot(Path(args.out)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
