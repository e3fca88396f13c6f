"""CLI command ``quantsearch train``: a model whose 1-bit codes rank well, or a QAT head.

Registered by :func:`add_commands` from ``cli.make_parser``; errors surface as
:class:`~quantsearch.exceptions.QuantsearchError` and ``cli.main`` prints them on one line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..exceptions import InvalidArgumentError

__all__ = ["add_commands"]


def cmd_train(args: argparse.Namespace) -> int:
    if args.out.suffix != ".npz":  # a model folder: train the model for 1-bit codes (issue 17)
        if args.corpus.suffix == ".npy" or args.corpus.is_file():
            raise InvalidArgumentError(
                f"--out must name a .npz file to train a head on {args.corpus} (a model folder is trained "
                f"from a BEIR folder), got {args.out}"
            )
        return cmd_train_model(args)
    return cmd_train_head(args)


def cmd_train_model(args: argparse.Namespace) -> int:
    from . import FinetuneConfig, train_model

    # only what the user set: the rest comes from the recipe for the pairs found (qrels or cloze)
    head = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("lr", args.lr),
            ("temperature", args.temperature),
            ("bits", args.bits),
            ("surrogate", args.surrogate),
            ("ema", args.ema),
        )
        if v is not None
    }
    head["seed"] = args.seed
    e2e = None
    if args.e2e_steps:
        e2e = FinetuneConfig(
            steps=args.e2e_steps,
            batch_size=args.e2e_batch_size,
            max_seq_length=args.e2e_max_seq_length,
            unfreeze_layers=args.unfreeze_layers,
            seed=args.seed,
        )
    report = train_model(
        args.corpus,
        args.out,
        model=args.model,
        pairs=args.pairs,
        head=head,
        e2e=e2e,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps({**report, "out": str(args.out)}, indent=2))
        return 0
    h = report["head"]
    print(
        f"trained on {report['pairs']['queries']:,} {report['pairs']['source']} queries in "
        f"{report['total_seconds']:.0f} s; validation NDCG@10 of the 1-bit codes (Hamming): "
        f"ITQ start {h['val_ndcg@10_itq_start']}, trained {h['val_ndcg@10_kept']} (epoch {h['kept_epoch']})"
    )
    print(f"wrote {args.out} (use it as --model {args.out}; its sign bits are the codes)")
    return 0


def cmd_train_head(args: argparse.Namespace) -> int:
    from ..quantization import LearnedBinaryQuantizer, save_quantizer

    if args.out.suffix != ".npz":
        raise InvalidArgumentError(f"--out must name a .npz file, got {args.out}")
    if not args.out.parent.is_dir():
        raise InvalidArgumentError(f"--out: folder {args.out.parent} does not exist")
    options = {k: getattr(args, k) for k in ("epochs", "lr", "temperature", "max_samples")}
    quantizer = LearnedBinaryQuantizer(
        args.bits,
        hidden=args.hidden,
        seed=args.seed,
        **{k: v for k, v in options.items() if v is not None},  # None: the quantizer's default
    )
    from ..ingest import training_vectors

    vectors = training_vectors(
        args.corpus, model=args.model, cache_dir=args.cache_dir, progress=not args.quiet
    )
    if quantizer.bits is not None and quantizer.bits > 8 * vectors.shape[1]:
        raise InvalidArgumentError(
            f"--bits {quantizer.bits} is more than 8x the dimension {vectors.shape[1]}"
        )
    t0 = time.perf_counter()
    quantizer.fit(vectors)
    seconds = time.perf_counter() - t0
    save_quantizer(quantizer, args.out)
    report = quantizer.training_report or {}
    if args.json:
        print(json.dumps({**report, "out": str(args.out), "code_bytes": quantizer.code_bytes}, indent=2))
        return 0
    losses = report.get("loss", [])
    print(
        f"trained on {report.get('samples')} vectors ({vectors.shape[1]}-d -> {quantizer.n_bits_} bits, "
        f"{quantizer.code_bytes} bytes per code) in {seconds:.1f} s"
    )
    if losses:
        print(f"loss       {losses[0]:.5f} (epoch 1) -> {losses[-1]:.5f} (epoch {len(losses)})")
    print(
        f"top-{report.get('k')} agreement with float32 on {report.get('held_out')} held-out documents: "
        f"ITQ start {report.get('agreement_before', float('nan')):.3f}, "
        f"trained {report.get('agreement_trained', float('nan')):.3f}; kept: {report.get('kept')}"
    )
    print(f"wrote {args.out}")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``train`` to the subcommands ``sub`` of the main parser."""
    p = sub.add_parser(
        "train",
        help="train a model whose 1-bit codes rank well (--out DIR), or a QAT head (--out FILE.npz)",
        description="--out MODEL_DIR: train a model for sign-bit codes on a BEIR folder: a code head on "
        "the base model trained with a Hamming-surrogate contrastive loss on the train qrels (else on "
        "inverse cloze pairs from the corpus; never the test split), optionally followed by end-to-end "
        "fine-tuning (--e2e-steps); the folder is a sentence-transformers model for --model. "
        "--out FILE.npz: the older projection head trained by self-distillation of the corpus's float32 "
        "neighbour rankings, usable by `quantsearch index --candidates FILE`.",
    )
    p.add_argument(
        "corpus",
        type=Path,
        help="a BEIR folder (model); for .npz: a .npy of vectors or a corpus as for `index`",
    )
    p.add_argument("--out", type=Path, required=True, help="model folder to write, or a .npz file (QAT head)")
    p.add_argument(
        "--pairs",
        choices=("auto", "qrels", "cloze"),
        default="auto",
        help="model: train qrels (auto: when present) or inverse cloze pairs from the corpus",
    )
    p.add_argument(
        "--e2e-steps",
        type=int,
        default=0,
        help="model: then fine-tune the whole encoder end to end for this many steps (CPU-heavy)",
    )
    p.add_argument("--e2e-batch-size", type=int, default=32, help="model: pairs per end-to-end step")
    p.add_argument(
        "--e2e-max-seq-length", type=int, default=256, help="model: tokens per text in end-to-end steps"
    )
    p.add_argument(
        "--unfreeze-layers",
        type=int,
        default=None,
        help="model: end to end, train only the top N transformer layers (and the head); the frozen "
        "layers run once per text, so steps are much cheaper (default: the whole encoder)",
    )
    p.add_argument(
        "--surrogate",
        choices=("tanh", "ste"),
        default=None,
        help="model: Hamming surrogate of the head: soft tanh codes, or exact signs with tanh gradients "
        "(default: the recipe for the pairs found)",
    )
    p.add_argument(
        "--ema", type=float, default=None, help="model: decay of the moving average of the head's weights"
    )
    p.add_argument("--bits", type=int, default=None, help="output bits (default: the dimension)")
    p.add_argument("--hidden", type=int, default=0, help="MLP width (0: linear head)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--model", default=None, help="embedding model (default: bundled all-MiniLM-L6-v2)")
    p.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: ~/.cache/quantsearch/embeddings)"
    )
    p.add_argument("--json", action="store_true", help="print the training figures as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
