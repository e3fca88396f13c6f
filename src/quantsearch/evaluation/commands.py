"""CLI command ``quantsearch eval``: every configuration and peer on one BEIR collection.

Registered by :func:`add_commands` from ``cli.make_parser``; errors surface as
:class:`~quantsearch.exceptions.QuantsearchError` and ``cli.main`` prints them on one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..cli_args import add_backend_option

__all__ = ["add_commands"]


def cmd_eval(args: argparse.Namespace) -> int:
    from ..embed import Embedder
    from .configs import PRESETS
    from .harness import evaluate_dataset
    from .report import format_table, write_report

    def on_row(row: dict[str, Any]) -> None:
        if not args.quiet:
            print(f"  {row['config']:<28} NDCG@{args.k} {row[f'ndcg@{args.k}']:.4f}", file=sys.stderr)

    preset_configs, preset_peers = PRESETS[args.preset]
    peers = () if args.no_peers else (args.peers if args.peers is not None else preset_peers)
    t0 = time.perf_counter()
    report = evaluate_dataset(
        args.dataset,
        args.configs if args.configs is not None else preset_configs,
        peers=peers,
        split=args.split,
        model=args.model,
        embedder=Embedder(args.model, backend=args.backend),
        cache_dir=args.cache_dir,
        k=args.k,
        progress=not args.quiet,
        on_row=on_row,
    )
    embeddings = report.meta["embeddings"]
    if not args.quiet:
        reused = "reused from the cache" if embeddings["corpus_cached"] else "computed and cached"
        print(f"embeddings {reused} ({embeddings['cache']})", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_table(report), end="")
    if args.out:
        written = write_report(report, args.out, plots=not args.no_plots)
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    if not args.quiet:
        print(f"eval took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    """Add ``eval`` to the subcommands ``sub`` of the main parser."""
    p = sub.add_parser(
        "eval",
        help="quality, memory and latency of every configuration on a BEIR collection, with peers",
        description="Embed a BEIR collection once (cached), then measure NDCG@10, recall, MRR, retention, "
        "bytes per vector and latency of each configuration and of peer libraries on the same embeddings. "
        "Config specs: [mrl<DIM>:|pca<DIM>:]<stage>[><stage>...][@<oversampling>], e.g. float32, int8, "
        "binary, binary>int8@10, rabitq-itq, int2-itq, q4_0, mrl256:binary>int8@4, pca256:rabitq-itq.",
    )
    p.add_argument("dataset", help="BEIR-layout folder, or a BEIR dataset name (scifact, nfcorpus, ...)")
    p.add_argument("--configs", nargs="+", default=None, help="our configurations (default: the preset's)")
    p.add_argument(
        "--preset",
        choices=("default", "codes", "lexical"),
        default="default",
        help="named sweep: 'default' (precisions, oversampling, Matryoshka), 'codes' (issue 5: every "
        "code family at its byte budget) or 'lexical' (BM25, hybrid, SVM vs bm25s and rank-bm25); "
        "--configs / --peers replace its rows",
    )
    p.add_argument(
        "--peers", nargs="+", default=None, help="peer rows (default: faiss and sentence-transformers)"
    )
    p.add_argument("--no-peers", action="store_true", help="measure no peer library")
    p.add_argument(
        "--out", type=Path, default=None, help="write results.json/.md/.txt and the PNG plots here"
    )
    p.add_argument("--no-plots", action="store_true", help="with --out: skip the PNG plots")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--model", default=None, help="embedding model (default: bundled all-MiniLM-L6-v2)")
    p.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: ~/.cache/quantsearch/embeddings)"
    )
    p.add_argument("-k", type=int, default=10, help="cutoff of NDCG/recall/MRR and of the timed searches")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    add_backend_option(p, "default: torch")
    p.set_defaults(func=cmd_eval)
